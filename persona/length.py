"""The brand's length and shape policy over a streamed reply: sentences, characters, list items.

:class:`LengthScanner` walks the raw text one character at a time (bounded state, flat cost) and
reports the offset of the first character that would break the policy: the first character of
sentence ``max_sentences + 1`` (sentences as :func:`persona.text.count_sentences` counts them),
the first non-space character past ``max_chars``, or the first character of list item
``max_list_items + 1`` (a line that starts with ``-``, ``*``, ``•``, ``+`` or ``1.`` / ``1)`` and a
space). It also knows where the last whole unit ended (:attr:`kept_end`: after a sentence's
terminator, or at a line break), so the guard can trim the reply to whole sentences.

Nothing past the limit is ever released: a new sentence is known to be one from its first
character; a line that could still turn out to be one list item too many is held from its start
(:meth:`held_from`) until its first characters rule it out.
"""

from __future__ import annotations

from persona.brand import LengthPolicy

_TERMINATORS = frozenset(".!?…")
_CLOSERS = frozenset("\"')]")
_BULLETS = frozenset("-*•+")
_LINE_SPACE = frozenset(" \t")


def _marker_state(prefix: str) -> bool | None:
    """Whether a line beginning ``prefix`` (leading spaces and tabs removed) is a list item: True,
    False, or None while its next characters still decide."""
    if not prefix:
        return None
    if prefix[0] in _BULLETS:
        return None if len(prefix) == 1 else prefix[1] in _LINE_SPACE
    digits = 0
    while digits < len(prefix) and prefix[digits].isdigit():
        digits += 1
    if digits == 0 or digits > 3:
        return False
    if digits == len(prefix):
        return None
    if prefix[digits] not in ".)":
        return False
    if digits + 1 == len(prefix):
        return None
    return prefix[digits + 1] in _LINE_SPACE


class LengthScanner:
    """Sentences, characters and list items so far (see the module docstring)."""

    __slots__ = (
        "_in_sentence",
        "_items",
        "_line",
        "_line_at",
        "_max_chars",
        "_max_items",
        "_max_sentences",
        "_sentences",
        "_term",
        "kept_end",
    )

    def __init__(self, policy: LengthPolicy) -> None:
        self._max_sentences = policy.max_sentences
        self._max_chars = policy.max_chars
        self._max_items = policy.max_list_items
        self._sentences = 0  # whole sentences so far
        self._in_sentence = False  # the current sentence has non-space text
        self._term = 0  # 0: no terminator; 1: in a run of terminators; 2: in closing quotes after one
        self._items = 0
        # The current line's beginning while it could still be a list marker (None: decided).
        self._line: str | None = "" if self._max_items is not None else None
        self._line_at = 0
        self.kept_end = 0  # raw offset just after the last whole sentence (or list item, past the limit)

    def step(self, text: str, at: int) -> int | None:
        """Take ``text`` starting at raw offset ``at``; the offset of the first character past the limit."""
        max_chars, max_sentences = self._max_chars, self._max_sentences
        for i, char in enumerate(text):
            offset = at + i
            if char == "\n":
                if self._max_items is not None:
                    self._line, self._line_at = "", offset + 1  # a new line: is it a list item?
            elif self._line is not None and not (char in _LINE_SPACE and not self._line):
                over = self._line_char(char)
                if over is not None:
                    return over
            if char.isspace():
                if self._term:
                    self._sentences += 1
                    self.kept_end = offset
                    self._in_sentence = False
                self._term = 0
                continue
            if max_chars is not None and offset >= max_chars:
                return offset
            if not self._in_sentence:
                if self._sentences >= max_sentences:
                    return offset
                self._in_sentence = True
            if char in _TERMINATORS:
                self._term = 1
            elif self._term and char in _CLOSERS:
                self._term = 2
            else:
                self._term = 0
        return None

    def _line_char(self, char: str) -> int | None:
        """The next character of a line's beginning; the line's offset when it is one item too many."""
        assert self._line is not None and self._max_items is not None
        self._line += char
        state = _marker_state(self._line)
        if state is None:
            return None
        self._line = None
        if state:
            self._items += 1
            if self._items > self._max_items:
                self.kept_end = self._line_at  # the items so far are whole
                return self._line_at
        return None

    def held_from(self) -> int | None:
        """Where a line begins that could still be one list item too many."""
        if self._line is None or self._max_items is None or self._items < self._max_items:
            return None
        return self._line_at
