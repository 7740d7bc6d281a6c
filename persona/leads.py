"""A cheap, exact prefilter for the guard's one pattern: where could a match (or a partial match) start?

The guard's pattern is hundreds of alternatives, most of them beginning with a common word ("you",
"i", "is", "my"). The ``regex`` engine tries every alternative at every word start, so searching a
piece of a few characters costs tens of microseconds, twice (a partial search first looks for a
complete match). Almost every alternative begins with a literal, though: :class:`Leads` reads the
pattern (with :mod:`re`'s parser) for the first few characters each alternative can begin with, and
:meth:`Leads.first` finds in Python the first position where one of them starts (or, at the end of the
text, could still start). No match, complete or partial, can start before it, so a search from there
finds what a search from the beginning finds; when there is none the search is skipped.

It only ever says "no match can start here" when that is certain: what it cannot read (a class like
``\\w``, a back-reference, an empty alternative, a lookaround it skips) makes it claim less, down to
"anywhere" (:func:`leads` returns None and the guard searches as before). Case-insensitively, a text
character outside ASCII (other than the typographic apostrophe) matches any lead character, since
case folding maps some of them onto ASCII letters (the Kelvin sign onto "k").
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Iterable
from typing import Any

# The parser behind `re` (Python 3.11+: re._parser; its names are private but have been stable for years).
_p: Any = importlib.import_module("re._parser")
_c: Any = importlib.import_module("re._constants")

LEAD_CHARS = 6  # characters of each alternative's beginning that are compared
_MAX_LEADS = 20000  # more leads than this: give up (the search runs from the beginning)
_WILD = "\x00"  # a text character that may match any lead character
_KEEP = frozenset("\u2019")  # non-ASCII characters compared as they are (no case variants)
# What `\s` matches within ASCII (the rest of what it matches is outside ASCII: a wildcard in the text).
_SPACES = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_CASE: Any = object()  # a node (_CASE, cased): case sensitivity changes here
_END: Any = object()  # a continuation marker: the alternative may go on with anything from here
_UPPER = "\x02"  # in a case-sensitive lead: a capital (ASCII) letter
_OTHER = "\x01"  # a lead character outside ASCII: only a wildcard of the text matches it
# Characters outside ASCII that case-insensitive matching (or full case folding) relates to ASCII letters
# (the long s and "s", the Kelvin sign and "k"): a lead ends before them.
_FOLDS = frozenset(
    "\u00df\u0130\u0131\u0149\u017f\u01f0\u1e96\u1e97\u1e98\u1e99\u1e9a\u1e9e\u212a"
    "\ufb00\ufb01\ufb02\ufb03\ufb04\ufb05\ufb06"
)
_REPEATS = tuple(getattr(_c, name) for name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") if hasattr(_c, name))
_ATOMIC = getattr(_c, "ATOMIC_GROUP", None)
_MAX_STEPS = 200_000  # parser nodes visited at most while reading the leads
_MAX_MEMO = 65536  # text beginnings whose alternatives a Leads remembers


_NORM_ASCII = {ord(c): " " if c in _SPACES else c.lower() for c in map(chr, range(128)) if c in _SPACES or c.isupper()}
_SHAPE_ASCII = {**_NORM_ASCII, **{ord(c): _UPPER for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}}


class _TooMany(Exception):
    pass


def _norm(char: str) -> str:
    """A text character as compared: lower-cased ASCII (whitespace as a space), the typographic
    apostrophe, else a wildcard."""
    if char.isascii():
        return " " if char in _SPACES else char.lower()
    return char if char in _KEEP else _WILD


def _lead_char(char: str) -> str | None:
    """A pattern character as a lead character; None where the lead must end (case folding)."""
    if char.isascii():
        return " " if char in _SPACES else char.lower()
    if char in _KEEP:
        return char
    return None if char in _FOLDS else _OTHER


class Leads:
    """The beginnings of a pattern's alternatives (lower-cased, at most ``LEAD_CHARS`` characters),
    those that must start on a word boundary (``\\b``) apart from those that need not. A lead written
    case-sensitively with capitals (``(?-i:[A-Z]{4,})``) has :data:`_UPPER` for them, and no letters."""

    def __init__(
        self,
        bounded: Iterable[str],
        free: Iterable[str],
        owners: list[tuple[Iterable[str], Iterable[str]]] | None = None,
    ) -> None:
        every = {*bounded, *free}
        self.lengths = sorted({len(s) for s in every})
        self.first_chars = frozenset(s[0] for s in every)
        self.bounded = frozenset(bounded)
        self.free = frozenset(free)
        # Proper prefixes of a lead (the text ends inside it: a partial match could start there).
        self.bounded_prefixes = frozenset(s[:n] for s in self.bounded for n in range(1, len(s)))
        self.free_prefixes = frozenset(s[:n] for s in self.free for n in range(1, len(s)))
        self.shaped = any(_UPPER in s for s in every)  # compared with the text's capitals as _UPPER too
        # Which alternatives (bit i: the i-th of `owners`, each its (bounded, free) leads) each lead and
        # each proper prefix of a lead belongs to: :meth:`masks` tells which alternatives could match where.
        self.everyone = (1 << len(owners)) - 1 if owners else -1  # -1: the alternatives are not known
        self.bounded_masks: dict[str, int] = {}
        self.free_masks: dict[str, int] = {}
        self.bounded_prefix_masks: dict[str, int] = {}
        self._memo: dict[tuple[str, bool], int] = {}  # masks' answers by the next characters
        self._candidates = _candidates(self.first_chars, frozenset(s[0] for s in self.free), self.shaped)
        self.free_prefix_masks: dict[str, int] = {}
        for i, (own_bounded, own_free) in enumerate(owners or ()):
            bit = 1 << i
            for leads_, masks, prefixes in (
                (own_bounded, self.bounded_masks, self.bounded_prefix_masks),
                (own_free, self.free_masks, self.free_prefix_masks),
            ):
                for lead in leads_:
                    masks[lead] = masks.get(lead, 0) | bit
                    for n in range(1, len(lead)):
                        prefixes[lead[:n]] = prefixes.get(lead[:n], 0) | bit

    def _hit(self, rest: str, at_boundary: bool, at_end: bool) -> bool:
        for length in self.lengths:
            if length > len(rest):
                break
            piece = rest[:length]
            if piece in self.free or (at_boundary and piece in self.bounded):
                return True
        return at_end and (rest in self.free_prefixes or (at_boundary and rest in self.bounded_prefixes))

    def first(self, text: str, pos: int) -> int | None:
        """The first position from ``pos`` where a lead starts or, at the end of ``text``, could still
        start; None when there is none (no match or partial match of the pattern starts in ``text[pos:]``)."""
        n = len(text)
        if pos >= n:
            return None
        segment = text[pos:n]
        norm = segment.translate(_NORM_ASCII)
        if not norm.isascii():
            norm = "".join(map(_norm, segment))
        # Capitals as _UPPER (a character outside ASCII is a wildcard in `norm`, found before `shape` is read).
        shape = segment.translate(_SHAPE_ASCII) if self.shaped else ""
        first_chars, shaped = self.first_chars, self.shaped
        for i in range(n - pos):
            char = norm[i]
            if char != _WILD and char not in first_chars and not (shaped and shape[i] in first_chars):
                continue
            p = pos + i
            # A word boundary at p, unless both sides are ASCII word characters.
            at_boundary = not (p > 0 and text[p - 1] in _WORD and text[p] in _WORD)
            rest = norm[i : i + LEAD_CHARS]
            if _WILD in rest:
                return p
            at_end = p + LEAD_CHARS > n
            if self._hit(rest, at_boundary, at_end) or (
                shaped and self._hit(shape[i : i + LEAD_CHARS], at_boundary, at_end)
            ):
                return p
        return None

    def _mask(self, rest: str, at_boundary: bool, at_end: bool) -> int:
        """:meth:`_hit` as the alternatives it hits (0: none)."""
        mask = 0
        free, bounded = self.free_masks, self.bounded_masks
        for length in self.lengths:
            if length > len(rest):
                break
            piece = rest[:length]
            mask |= free.get(piece, 0)
            if at_boundary:
                mask |= bounded.get(piece, 0)
        if at_end:
            mask |= self.free_prefix_masks.get(rest, 0)
            if at_boundary:
                mask |= self.bounded_prefix_masks.get(rest, 0)
        return mask

    def _mask_at(self, raw: str, at_boundary: bool) -> int:
        """The alternatives that could match at a position whose next characters are ``raw`` (``LEAD_CHARS``
        of them, fewer at the end of the text), as :meth:`first` judges it."""
        rest = raw.translate(_NORM_ASCII)
        if not rest.isascii():
            rest = "".join(map(_norm, raw))
        if _WILD in rest:
            return self.everyone
        at_end = len(raw) < LEAD_CHARS
        mask = self._mask(rest, at_boundary, at_end)
        if self.shaped:
            mask |= self._mask(raw.translate(_SHAPE_ASCII), at_boundary, at_end)
        return mask

    def masks(self, text: str, lo: int, hi: int) -> list[tuple[int, int]]:
        """:meth:`first` for every position of ``text[lo:hi]``: (position, the alternatives that could match
        there, complete or partial, as a bit mask; :attr:`everyone` where it cannot tell) for each position
        where one could. A position ``LEAD_CHARS`` or more before the end of ``text`` is judged for good:
        more text does not change its mask. Needs the alternatives (:func:`combined_leads` gives them).

        Only the positions where a lead could begin are looked at (:attr:`_candidates`: a character that is
        the first of a lead, within an ASCII word only of one that need not begin on a word boundary), and
        the answer for the next ``LEAD_CHARS`` characters is remembered (replies repeat their words)."""
        out: list[tuple[int, int]] = []
        if lo >= hi:
            return out
        memo = self._memo
        for found in self._candidates.finditer(text, lo, hi):
            p = found.start()
            at_boundary = not (p > 0 and text[p - 1] in _WORD and text[p] in _WORD)
            key = (text[p : p + LEAD_CHARS], at_boundary)
            mask = memo.get(key)
            if mask is None:
                if len(memo) >= _MAX_MEMO:
                    memo.clear()
                mask = memo[key] = self._mask_at(key[0], at_boundary)
            if mask:
                out.append((p, mask))
        return out


def _candidates(first_chars: frozenset[str], free_first: frozenset[str], shaped: bool) -> re.Pattern[str]:
    """Where a lead could begin in a text (a superset, never less): a character outside ASCII (a wildcard,
    but for the typographic apostrophe, compared as it is), an ASCII character that is the first of a lead
    as compared (lower-cased, whitespace as a space, capitals as :data:`_UPPER` too when ``shaped``) at a
    word boundary, or within a word the first of a lead that need not begin on one."""

    def hits(char: str, firsts: frozenset[str]) -> bool:
        return _norm(char) in firsts or (shaped and char.translate(_SHAPE_ASCII) in firsts)

    ascii_ = [chr(c) for c in range(128)]
    word = [c for c in ascii_ if c in _WORD and hits(c, first_chars)]
    anywhere = [c for c in ascii_ if c not in _WORD and hits(c, first_chars)]
    anywhere += [c for c in ascii_ if c in _WORD and hits(c, free_first)]
    anywhere += [c for c in _KEEP if c in first_chars]

    def cls(chars: Iterable[str]) -> str:
        return "[" + "".join(f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}" for c in sorted(chars)) + "]"

    keep = "".join(f"\\u{ord(c):04x}" for c in sorted(_KEEP))
    parts = [f"[^\\x00-\\x7f{keep}]"]
    if anywhere:
        parts.append(cls(set(anywhere)))
    if word:
        parts.append("(?<![A-Za-z0-9_])" + cls(word))
    return re.compile("|".join(parts))


def leads(pattern: str, flags: int = re.IGNORECASE) -> Leads | None:
    """The leads of ``pattern`` (written in :mod:`re` syntax), or None when an alternative may begin
    with anything (or the pattern is not one :mod:`re` can read, or it has too many leads)."""
    return combined_leads([(pattern, False)], flags)


def combined_leads(alternatives: Iterable[tuple[str, bool]], flags: int = re.IGNORECASE) -> Leads | None:
    """The leads of a pattern made of ``alternatives``: (pattern, whether it is preceded by ``\\b``).
    Each alternative's leads are read once per process (the built-in families are shared by brands)."""
    alternatives = list(alternatives)
    if not alternatives:
        return None  # (an empty pattern matches everywhere)
    bounded: set[str] = set()
    free: set[str] = set()
    owners: list[tuple[Iterable[str], Iterable[str]]] = []
    for rx, at_word in alternatives:
        found = _alternative_leads(rx, at_word, flags)
        if found is None:
            return None
        bounded |= found[0]
        free |= found[1]
        owners.append(found)
        if len(bounded) + len(free) > _MAX_LEADS:
            return None
    return Leads(bounded, free, owners)


@functools.lru_cache(maxsize=1024)
def _alternative_leads(rx: str, at_word: bool, flags: int) -> tuple[frozenset[str], frozenset[str]] | None:
    try:
        parsed = _p.parse(rx, flags)
    except (re.error, RecursionError, ValueError, TypeError, OverflowError):
        return None
    walk = _Walk()
    try:
        walk.walk(list(parsed), "", at_word)
    except (_TooMany, RecursionError):
        return None
    if "" in walk.bounded or "" in walk.free:
        return None
    return frozenset(walk.bounded), frozenset(walk.free)


class _Walk:
    def __init__(self) -> None:
        self.bounded: set[str] = set()
        self.free: set[str] = set()
        self.steps = 0

    def emit(self, prefix: str, bound: bool) -> None:
        (self.bounded if bound else self.free).add(prefix)
        if len(self.bounded) + len(self.free) > _MAX_LEADS:
            raise _TooMany

    def walk(self, items: list[Any], prefix: str, bound: bool, cased: bool = False) -> None:
        """Every lead of the sequence ``items`` (parser nodes, :data:`_END`, or a change of case
        sensitivity) after ``prefix``."""
        i = 0
        while True:
            self.steps += 1
            if self.steps > _MAX_STEPS:
                raise _TooMany
            if len(prefix) >= LEAD_CHARS or i == len(items) or items[i] is _END:
                self.emit(prefix, bound)
                return
            op, av = items[i]
            rest = items[i + 1 :]
            if op is _CASE:
                cased = av
                i += 1
            elif op is _c.AT:
                if av is _c.AT_BOUNDARY and not prefix:
                    bound = True
                i += 1  # other anchors: zero-width, skipped (claims more, never less)
            elif op in (_c.ASSERT, _c.ASSERT_NOT):
                i += 1  # lookarounds: zero-width, skipped
            elif op is _c.LITERAL:
                char = _lead_char(chr(av))
                if char is None or not _joins(prefix, char):
                    self.emit(prefix, bound)
                    return
                if char == _OTHER:  # only a wildcard of the text matches it, and one is always a start
                    self.emit(prefix + char, bound)
                    return
                prefix += char
                i += 1
            elif op is _c.IN:
                chars = _class_chars(av)
                if chars is None:
                    self.emit(prefix, bound)
                    return
                if cased and all("A" <= c <= "Z" for c in _ascii_members(av)):
                    chars = sorted({_UPPER if "a" <= c <= "z" else c for c in chars})
                for char in chars:
                    if not _joins(prefix, char):
                        self.emit(prefix, bound)
                    elif char == _OTHER:
                        self.emit(prefix + char, bound)
                    else:
                        self.walk(rest, prefix + char, bound, cased)
                return
            elif op is _c.SUBPATTERN:
                _group, add_flags, del_flags, body = av
                inner = (cased or bool(del_flags & re.IGNORECASE)) and not add_flags & re.IGNORECASE
                self.walk([(_CASE, inner), *body, (_CASE, cased), *rest], prefix, bound, cased)
                return
            elif op is _c.BRANCH:
                for alternative in av[1]:
                    self.walk([*alternative, *rest], prefix, bound, cased)
                return
            elif op in _REPEATS:
                low, high, item = av
                if low > 0:  # X{low,high} is X, then X{low-1,high-1}
                    again = (op, (low - 1, high if high == _c.MAXREPEAT else high - 1, item))
                    self.walk([*item, again, *rest], prefix, bound, cased)
                    return
                self.walk(rest, prefix, bound, cased)  # none
                if high != 0:  # X, then X{0,high-1}
                    again = (op, (0, high if high == _c.MAXREPEAT else high - 1, item))
                    self.walk([*item, again, *rest], prefix, bound, cased)
                return
            elif op is _ATOMIC:
                self.walk([*av, *rest], prefix, bound, cased)
                return
            else:  # anything else (ANY, NOT_LITERAL, categories, back-references, …): the lead ends here
                self.emit(prefix, bound)
                return


def _joins(prefix: str, char: str) -> bool:
    """Whether ``char`` may follow ``prefix`` in a lead: a case-sensitive capital and a letter compared
    case-insensitively are not mixed in one lead (the text is compared in one form or the other)."""
    if char == _UPPER:
        return not any("a" <= c <= "z" for c in prefix)
    return not ("a" <= char <= "z" and _UPPER in prefix)


def _ascii_members(items: list[Any]) -> list[str]:
    """The ASCII characters a class lists (literals and ranges)."""
    out: list[str] = []
    for op, av in items:
        if op is _c.LITERAL:
            out.append(chr(av))
        elif op is _c.RANGE:
            out.extend(chr(c) for c in range(av[0], min(av[1], 0x7F) + 1))
        else:
            out.append("_")
    return out


def _class_chars(items: list[Any]) -> list[str] | None:
    """The lead characters a class matches, or None when it cannot tell (a negated class, ``\\w``, a
    character case folding relates to ASCII)."""
    out: set[str] = set()
    for op, av in items:
        if op is _c.LITERAL:
            out.add(chr(av))
        elif op is _c.RANGE:
            low, high = av
            if low < 0x80 and min(high, 0x7F) - low > 96:
                return None
            out.update(chr(c) for c in range(low, min(high, 0x7F) + 1))
            if high >= 0x80:
                if any(low <= ord(c) <= high for c in _FOLDS):
                    return None
                out.add(_OTHER)
        elif op is _c.CATEGORY and av is _c.CATEGORY_SPACE:
            out.update(_SPACES)
            out.add(_OTHER)
        else:  # NEGATE, other categories
            return None
    normed = {_lead_char(c) for c in out}
    if None in normed:
        return None
    return sorted(c for c in normed if c is not None)
