"""The streaming guardrail: every piece of upstream text passes through a ``ReplyGuard``.

A guard may hold text back (a holdback window), release it, or report a violation; the reply
pipeline then stops the upstream call and replaces what was streamed with the brand's fallback
(``retract`` + ``done{finish_reason: fallback}``). A guard is made per upstream attempt, so text
held back when an attempt fails is simply dropped (the client never saw it).

:class:`BrandGuard` is the real one. It holds back *only what could still become a violation*::

    upstream:  "Our beans ship Monday. As an AI lang|"
                └──────── released ───────┘└─ held ─┘
                 (no rule can match through    (the beginning of the filler "as an AI language
                  these characters any more)    model": released the moment the next characters
                                                rule it out, or the reply is replaced)

Four streaming checks say what is held (:mod:`persona.checks`, :mod:`persona.facts`): phrases (banned, filler,
competitors, the canary) walk two tries one normalised character at a time
(:class:`~persona.checks.PhraseScanner`) and hold from the earliest phrase under way; the
don't-patterns, refusals and emoji policy are one ``regex`` pattern whose *partial* match holds
from where a match could still start; recited instructions hold the last words while they are the
beginning of an ``LEAK_N``-word run of the rules; grounded facts (``guard.facts``) hold a possible
fact — a figure, a number word, a capitalised name, a phone, email or URL — from its first character
until the words after it rule out its going on, then release it if the reply's grounding (the brand's
knowledge, examples and canned replies, the question, retrieved snippets, recent turns) has it, or
report ``unsupported_fact`` (the ``unsure`` fallback). Each keeps a bounded state, so the cost per token
is flat however long the reply. No prefix of a violation ever reaches a client, live or resumed
(``tests/test_guard.py`` checks that over random rule sets, texts and chunkings, and that nothing is
held that no rule could still match). A brand may hold more (``guard.hold``): whole sentences
(``rules`` or ``length: sentence``, the old holdback window of ``holdback_chars``), or the whole
reply until the off-topic check (``off_topic: reply``). At the end of a reply:

* empty output → the ``error`` fallback (else ``off_topic``);
* ``finish_reason: length`` → trimmed to the last whole sentence (a ``retract`` if the cut part
  was already out), or the ``truncated`` fallback when there is no whole sentence;
* off-topic (the reply's domain coverage under the brand's threshold; the question is only weak
  context; only a reply in the vocabulary's language is judged, :func:`persona.checks.vocabulary_language`)
  → a ``GuardNote("off_topic")`` that the job logs and reports through its hooks; with
  ``guard.off_topic.action: fallback`` also replaced.

The reply's language (:mod:`persona.language`) is judged once its first sentence or so is there
(and at the end for a short reply): a reply in another language than the user's (or the brand's
first) is replaced with ``violation="language"`` and the brand's fallback in the expected language
(``GuardStep.replacement``, else ``off_brand``), retracting what streamed; ``guard.hold.language:
sentence`` holds everything until it is judged.

When an attempt ends early (upstream error, cancel, deadline) the job calls
``finish(ABORTED)``: held text is released once the end-of-text checks pass (a phrase that only
the end completes, "… Starbucks", is not), so the client keeps the text so far as without a guard.

:class:`PassThroughGuard` releases everything at once (benchmarks compare against it).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import regex

from persona.brand import Brand
from persona.checks import (
    LEAK_N,
    CompiledRules,
    Finding,
    PhraseScanner,
    compile_rules,
    coverage,
    off_topic,
    vocabulary_language,
)
from persona.encoded import EncodedScanner
from persona.facts import FactScanner, grounding
from persona.language import LanguageGate, Verdict, reply_language
from persona.leads import LEAD_CHARS
from persona.length import LengthScanner
from persona.text import WORD, last_sentence_end

ABORTED = "aborted"  # finish reason for an attempt that ended without the upstream finishing
_WORD_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789'"  # what persona.text.WORD is made of


@dataclass(frozen=True)
class GuardNote:
    """Something the job should log and report through its hooks (``event``, ``fields``)."""

    event: str
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class GuardStep:
    release: str = ""  # text that may go to clients now
    violation: str | None = None  # the rule that fired; the reply is replaced
    replacement: str | None = None  # the guard's own replacement (a trimmed reply); None: the
    # brand's fallback for the rule, chosen by reply.ending.fallback_text
    notes: tuple[GuardNote, ...] = ()
    stop: bool = False  # the reply is complete after ``release`` (the length policy trimmed it): stop
    # the upstream call and end normally, with finish_reason length


@dataclass(frozen=True)
class GuardContext:
    """What a guard may know about the request: the question and the text it was given
    (retrieved facts, recent turns), for the end-of-reply relevance check and as grounding for the
    facts a reply may state (with the brand's whole knowledge: :mod:`persona.facts`); the earlier
    user turns (oldest first) and the client's locale hint (``es-MX``), for the language check when
    the question is too short to tell."""

    question: str = ""
    context: tuple[str, ...] = field(default_factory=tuple)
    user_turns: tuple[str, ...] = field(default_factory=tuple)
    locale: str | None = None


class ReplyGuard(Protocol):
    def feed(self, text: str) -> GuardStep:
        """Take the next upstream text; cheap and synchronous (it runs per token)."""
        ...

    def finish(self, finish_reason: str) -> GuardStep:
        """The upstream ended (or :data:`ABORTED`): release what is held back, or report a violation."""
        ...


class GuardFactory(Protocol):
    def __call__(self, brand: Brand, context: GuardContext | None = None, /) -> ReplyGuard: ...


class PassThroughGuard:
    def feed(self, text: str) -> GuardStep:
        return GuardStep(release=text)

    def finish(self, finish_reason: str) -> GuardStep:
        return GuardStep()


def pass_through(brand: Brand, context: GuardContext | None = None, /) -> ReplyGuard:
    return PassThroughGuard()


# Released text kept as context for patterns that look behind (``\b``, lookbehinds).
_CONTEXT_CHARS = 64


class BrandGuard:
    """The brand's rules over a streamed reply (see the module docstring)."""

    def __init__(self, brand: Brand, context: GuardContext | None = None) -> None:
        self.brand = brand
        self.context = context or GuardContext()
        self.rules: CompiledRules = compile_rules(brand)
        hold = brand.guard.hold
        self.sentences = hold.rules == "sentence" or hold.length == "sentence"
        self.whole_reply = hold.off_topic == "reply" and brand.guard.off_topic.action == "fallback"
        # Sentence mode: never shorter than the longest literal phrase.
        self.window = max(brand.guard.holdback_chars, self.rules.longest_literal)
        # A "sentence" with no spaces at all is cut mid-word past this; a pattern match that is still
        # partial after this many characters is given up (patterns are meant to stay within a sentence).
        self.hard_cap = max(4 * self.window, 512)
        self._folded = PhraseScanner(self.rules.folded_trie)
        self._cased = PhraseScanner(self.rules.cased_trie) if self.rules.cased_trie else None
        self._prev_space = False
        # Raw text: everything fed (offset `_fed`), released up to `_out`; `_held` is [_out, _fed).
        self._fed = 0
        self._out = 0
        self._held: list[str] = []
        self._released: list[str] = []
        # Pattern scan window: raw text from offset `_scan_at`; no match can start before `_rx_from`.
        self._scan = ""
        self._scan_at = 0
        self._rx_from = 0
        self._rx_held: int | None = None
        # Where a match could start (persona.leads), judged once for good: raw offsets below `_leads_to`
        # with the pattern's groups that could match there (a bit mask), from `_rx_from` on.
        self._leads: list[tuple[int, int]] = []
        self._leads_to = 0
        # Recited instructions: the last words with their raw offsets, and the word still being written.
        self._recent: deque[tuple[str, int]] = deque(maxlen=LEAK_N)
        # The suffixes of those words that begin a run of the instructions (earliest first), kept as each
        # word completes, so what the leak check holds is known without rebuilding them on every piece.
        self._leak_live: list[tuple[tuple[str, ...], int]] = []
        self._run = ""  # lower-cased trailing run of word characters ([a-z0-9'])
        self._run_at = 0
        self._length = LengthScanner(brand.length)
        self._encoded = EncodedScanner()  # base64 / hex runs that decode to text (persona.encoded)
        self._stopped = False
        # Grounded facts: the grounding is built once per reply (the brand's part once per brand).
        facts = brand.guard.facts
        self._facts: FactScanner | None = None
        self._fact_notes: list[GuardNote] = []  # action: log — reported with the next step
        if facts.check:
            ground = grounding(brand, self.context.context, self.context.question)
            self._facts = FactScanner(
                ground, facts.kinds, hold=facts.action == "fallback", question=self.context.question
            )
        # The reply's language, judged after its first sentence or so (persona.language).
        check = brand.guard.language
        self._language = (
            LanguageGate(brand, self.context.question, self.context.user_turns, self.context.locale)
            if check.action != "off"
            else None
        )
        self._hold_language = self._language is not None and check.action == "fallback" and hold.language == "sentence"

    # --- streaming ----------------------------------------------------------------------------------
    def feed(self, text: str) -> GuardStep:
        if self._stopped or not text:
            return GuardStep()
        at = self._fed
        over = self._length.step(text, at)
        if over is not None:
            return self._over_length(text, at, over)
        self._fed += len(text)
        self._held.append(text)
        finding = self._check(text, at)
        if finding is not None:
            return self._violate(finding)
        if self._language is not None and self._language.pending:
            verdict = self._language.step(text, self._text)
            if verdict is not None:
                wrong = self._wrong_language(verdict)
                if wrong.violation is not None:
                    return wrong
                self._fact_notes.extend(wrong.notes)  # action: log — reported with this step
        if self._fact_notes:
            return GuardStep(release=self._release(self._cut()), notes=self._take_notes())
        return GuardStep(release=self._release(self._cut()))

    def _text(self) -> str:
        return "".join(self._released) + "".join(self._held)

    def _wrong_language(self, verdict: Verdict) -> GuardStep:
        """A reply judged to be in the wrong language: replaced (the fallback in the language it should
        have been in, else ``off_brand``), or only noted with ``language.action: log``."""
        action = self.brand.guard.language.action
        note = GuardNote("language", verdict.fields(action))
        if action != "fallback":
            return GuardStep(notes=(note,))
        self._stopped = True
        self._held = []
        want = verdict.expected.primary or next(iter(self.brand.languages), None)
        replacement = next((text for code, text in self.brand.fallbacks.language.items() if code == want), None)
        return GuardStep(violation="language", replacement=replacement, notes=(*self._take_notes(), note))

    def _language_end(self, text: str) -> GuardStep | None:
        """The end-of-text language check: a step to return (a violation or a note), or None."""
        if self._language is None:
            return None
        verdict = self._language.finish(text)
        return self._wrong_language(verdict) if verdict is not None else None

    def _over_length(self, text: str, at: int, over: int) -> GuardStep:
        """The reply ran past the length policy at raw offset ``over``: nothing from there on is
        checked or released. The text before it is checked to its end, then trimmed to its last whole
        sentence (or list item) or replaced, as the brand chose (``length.action``)."""
        if over < at:  # a list item that began in held text
            held = "".join(self._held)
            self._held = [held[: over - self._out]] if over > self._out else []
            self._fed = over
            self._scan = self._scan[: max(0, over - self._scan_at)]
            self._leads, self._leads_to = [], self._rx_from  # (the leads near the new end are judged again)
        else:
            kept = text[: over - at]
            self._fed += len(kept)
            if kept:
                self._held.append(kept)
                finding = self._check(kept, at)
                if finding is not None:
                    return self._violate(finding)
        finding = self._end_findings()
        if finding is not None:
            return self._violate(finding)
        if self.brand.length.action == "fallback":
            return self._violate(Finding("length", f"past the length policy at character {over}"))
        return self._end_at("".join(self._released) + "".join(self._held), self._length.kept_end)

    def _end_at(self, full: str, end: int) -> GuardStep:
        """End the reply on ``full[:end]`` (whole sentences): release it and stop, or retract what went
        past it, or the ``truncated`` fallback when nothing whole is left."""
        self._stopped = True
        kept = full[:end].rstrip()
        if not kept:
            return GuardStep(violation="truncated")
        language = self._language_end(kept)
        if language is not None and language.violation is not None:
            return language
        notes, replace = self._judge(kept)
        notes = (*(language.notes if language is not None else ()), *notes)
        if replace:
            return GuardStep(violation="off_topic", notes=notes)
        if not full[len(kept) : self._out].strip():  # only whitespace past the kept text is out
            release = self._release(len(kept))
            self._held = []
            return GuardStep(release=release, stop=True, notes=notes)
        return GuardStep(violation="length", replacement=kept, notes=notes)

    def finish(self, finish_reason: str) -> GuardStep:
        if self._stopped:
            return GuardStep()
        if finish_reason == ABORTED:
            # Complete phrases waiting for their word boundary, and the last word, are checked first.
            if self._end_findings() is not None:
                self._stopped = True
                return GuardStep()
            # Held text is released only in the right language (a brand that holds for it).
            language = self._language_end(self._text()) if self._hold_language else None
            if language is not None and language.violation is not None:
                self._stopped = True
                return GuardStep(notes=language.notes)
            return GuardStep(release=self._release(self._fed), notes=self._take_notes())
        finding = self._end_findings()
        if finding is not None:
            return self._violate(finding)
        full = self._text()
        if not full.strip():
            return self._violate(Finding("empty", "the model sent no text"))
        language = self._language_end(full)
        if language is not None and language.violation is not None:
            return language
        early = language.notes if language is not None else ()
        if finish_reason == "length":
            trimmed = self._trim(full)
            return dataclasses.replace(trimmed, notes=(*early, *trimmed.notes)) if early else trimmed
        notes, replace = self._judge(full)
        if replace:
            self._stopped = True
            return GuardStep(violation="off_topic", notes=(*early, *notes))
        return GuardStep(release=self._release(self._fed), notes=(*early, *notes))

    def _judge(self, full: str) -> tuple[tuple[GuardNote, ...], bool]:
        """The end-of-reply topicality check: its notes, and whether the reply is to be replaced."""
        check = self.brand.guard.off_topic
        facts = self._take_notes()  # guard.facts.action: log — a fact the end completed
        scored = coverage(self.brand, full, (self.context.question, *self.context.context))
        if scored is None or not off_topic(self.brand, scored) or not self._in_vocabulary_language(full):
            return facts, False
        fields = {
            "score": round(scored[0], 3),
            "threshold": check.threshold,
            "terms": scored[1],
            "action": check.action,
        }
        return (*facts, GuardNote("off_topic", fields)), check.action == "fallback"

    def _in_vocabulary_language(self, full: str) -> bool:
        """Whether lexical coverage can judge the reply: not when it is in another language than the
        brand's vocabulary that the brand speaks (a good Spanish answer of a brand that answers in
        Spanish). A reply in a language the brand does not speak is judged still: it is off-brand
        anyway, and the coverage check is a backstop for a language check that did not decide. The
        reply's language: the language check's verdict, else the detector on the reply, else the
        user's language (a short "¡Claro!"). Only asked of a reply that scored off-topic (rare)."""
        verdict = self._language.verdict if self._language is not None else None
        language = verdict.detected if verdict is not None else reply_language(full)
        if language is None and self._language is not None:
            language = self._language.want().user
        spoken = not self.brand.languages or language in self.brand.languages
        return language is None or language == vocabulary_language(self.brand) or not spoken

    # --- the three streaming checks -------------------------------------------------------------------
    def _check(self, text: str, at: int) -> Finding | None:
        """The streaming checks on the next ``text`` (raw offset ``at``), in order; the first finding."""
        return (
            self._phrases(text, at)
            or self._leak(text, at)
            or self._patterns(text)
            or self._fact(text, at)
            or self._encoded.feed(text, at)
        )

    def _phrases(self, text: str, at: int) -> Finding | None:
        """Banned phrases, filler, competitors, the canary: normalised one character at a time (a run
        of whitespace as one space, the typographic apostrophe as a straight one; lower-cased for the
        folded phrases), each scanner over the whole piece; the first finding, the cased scanner's first
        at the same character."""
        folded, cased = self._folded, self._cased
        if text.isascii() and text.isprintable() and "  " not in text and not (self._prev_space and text[0] == " "):
            # (Printable ASCII, no run of spaces: each character is itself, one for one.)
            offsets: Sequence[int] = range(at, at + len(text))
            cased_found = cased.run(text, offsets) if cased is not None else None
            found = folded.run(text.lower(), offsets)
            prev_space = text[-1] == " "
        else:
            prev_space = self._prev_space
            chars: list[str] = []
            offsets = []
            lowered: list[str] = []
            lowered_at: list[int] = []
            for i, char in enumerate(text):
                if char.isspace():
                    if prev_space:
                        continue  # a run of whitespace is one space
                    prev_space, char = True, " "
                else:
                    prev_space = False
                    if char == "\u2019":
                        char = "'"
                chars.append(char)
                offsets.append(at + i)
                for part in char.lower():
                    lowered.append(part)
                    lowered_at.append(at + i)
            cased_found = cased.run("".join(chars), offsets) if cased is not None else None
            found = folded.run("".join(lowered), lowered_at)
        if cased_found is not None and (found is None or cased_found[0] <= found[0]):
            return cased_found[1]
        if found is not None:
            return found[1]
        self._prev_space = prev_space
        return None

    def _leak(self, text: str, at: int) -> Finding | None:
        """Recited instructions: each newly completed word's ``LEAK_N``-gram (words as :func:`words`)."""
        if not self.rules.shingles:
            return None
        lowered = text.lower()
        exact = len(lowered) == len(text)
        cut = len(lowered.rstrip(_WORD_CHARS))  # the last word may go on in the next piece
        if cut == 0:
            if not self._run:
                self._run_at = at
            self._run += lowered
            return None
        done = self._run + lowered[:cut]
        base = self._run_at if self._run else at  # `done` is contiguous raw text from `base`
        self._run, self._run_at = lowered[cut:], at + cut if exact else at
        prefixes, shingles = self.rules.leak_prefixes, self.rules.shingles
        for match in WORD.finditer(done):
            start = base + match.start() if exact else base  # lower() changed lengths: hold more
            word = match.group()
            self._recent.append((word, start))
            # The live runs are every run of the last words that begins a shingle (each one's shorter
            # beginnings are live too), so the last LEAK_N words are a shingle exactly when the run of the
            # LEAK_N - 1 before this word was live and goes on with it.
            live = []
            gram = None
            for ws, at_ in self._leak_live:
                grown = (*ws, word)
                if grown in prefixes:
                    live.append((grown, at_))
                elif len(grown) == LEAK_N and grown in shingles:
                    gram = grown
            if (word,) in prefixes:
                live.append(((word,), start))
            self._leak_live = live
            if gram is not None:
                return Finding("prompt_leak", " ".join(gram))
        return None

    def _leak_held_from(self) -> int | None:
        """The earliest raw offset from which the words so far could still become a leak."""
        if not self.rules.shingles:
            return None
        if not self._run:
            return self._leak_live[0][1] if self._leak_live else None
        run = WORD.findall(self._run)
        if len(run) != 1:  # odd apostrophes: hold, it is short
            recent = list(self._recent)[-(LEAK_N - 1) :]
            return min([self._run_at, *(at for _, at in recent[:1])])
        partials = self.rules.leak_partials
        for words_, at in self._leak_live:
            if (*words_, run[0]) in partials:
                return at
        return self._run_at if (run[0],) in partials else None

    def _patterns(self, text: str) -> Finding | None:
        """Don't-patterns, refusals, emoji: a complete match is a violation; a partial one (the text
        so far could still become a match) holds the text from where it starts."""
        pattern = self.rules.regex
        if pattern is None:
            return None
        self._scan += text
        floor = max(self._rx_from, self._fed - self.hard_cap)  # give up on an endless partial match
        match = self._find_from(floor, partial=True)
        if match is not None and not match.partial:
            if match.end() < len(self._scan) or not _continues_word(self._scan):
                return Finding(self.rules.names.get(match.lastgroup or "", "dont"), match.group(0))
            # A match that ends on a word character at the end of the text so far ("bro" of "broad", a
            # `\b` the end of the buffer satisfies) is complete only once the next character is known:
            # held like a partial match, confirmed by the next piece or by the end of the reply. The regex
            # engine prefers a complete match to an earlier partial one: held from the earliest of them.
            start = match.start()
            # (Only where a lead is: no match, complete or partial, starts anywhere else.)
            leads = self._lead_starts(floor) if self.rules.leads is not None else range(floor - self._scan_at, start)
            for at in leads:
                if at >= start:
                    break
                early = pattern.match(self._scan, at, partial=True)
                if early is not None:
                    start = at
                    break
            self._rx_from = self._rx_held = start + self._scan_at
        elif match is None or match.start() + self._scan_at >= self._fed:
            self._rx_from, self._rx_held = self._fed, None
        else:
            self._rx_from = self._rx_held = match.start() + self._scan_at
        keep = min(self._rx_from, self._out) - _CONTEXT_CHARS
        if keep - self._scan_at > self.hard_cap:  # trimmed now and then, not per piece
            self._scan = self._scan[keep - self._scan_at :]
            self._scan_at = keep
        return None

    def _find_from(self, floor: int, *, partial: bool = False) -> regex.Match[str] | None:
        """The pattern's first match (with ``partial``, or partial match) from raw offset ``floor``. No match,
        complete or partial, starts before the first lead of the pattern (persona.leads): the search starts
        there, or is not needed (the partial search would find an empty match at the end); it needs only
        the groups that could match at one of the leads from there on."""
        if self.rules.leads is None:
            return self.rules.find(self._scan, max(0, floor - self._scan_at), partial=partial)
        first, starts = self._first_lead(floor)
        return self.rules.find(self._scan, first, partial=partial, starts=starts) if first is not None else None

    def _first_lead(self, floor: int) -> tuple[int | None, list[tuple[int, int]] | None]:
        """The first lead from raw offset ``floor`` (relative to the scan window; None: no match can start
        from there), and the groups of the pattern that could match at a lead from there with the first
        position where each could (:meth:`CompiledRules.group_search`; None: any group, search them all)."""
        leads = self.rules.leads
        assert leads is not None
        found = self._leads
        if found and found[0][0] < floor:
            del found[: bisect.bisect_left(found, (floor, -2))]
        scan, at = self._scan, self._scan_at
        lo = max(self._leads_to, floor)
        final = self._fed - LEAD_CHARS + 1 - at  # a lead from here on could still change with more text
        tail = leads.masks(scan, lo - at, len(scan))
        if final > lo - at:
            cut = bisect.bisect_left(tail, (final, -2))
            found += [(p + at, mask) for p, mask in tail[:cut]]
            del tail[:cut]
            self._leads_to = final + at
        if not found and not tail:
            return None, None
        first = found[0][0] - at if found else tail[0][0]
        if not self.rules.groups:
            return first, None
        starts: dict[int, int] = {}
        for p, mask in itertools.chain(((p - at, mask) for p, mask in found), tail):  # window offsets, in order
            if mask < 0:
                return first, None
            for i in _bits(mask):
                starts.setdefault(i, p)
        return first, sorted(starts.items())

    def _lead_starts(self, floor: int) -> list[int]:
        """The leads from raw offset ``floor`` (offsets in the scan window), as :meth:`_first_lead` found them."""
        at = self._scan_at
        starts = [p - at for p, _ in self._leads if p >= floor]
        lo = max(self._leads_to, floor) - at
        assert self.rules.leads is not None
        return starts + [p for p, _ in self.rules.leads.masks(self._scan, lo, len(self._scan))]

    def _end_findings(self) -> Finding | None:
        """At the end of the text: a phrase waiting for its word boundary, the last word's n-gram,
        a pattern that ends at the end."""
        found = self._folded.finish() or (self._cased.finish() if self._cased is not None else None)
        if found is None and self._run:
            run, self._run = self._run, ""
            found = self._leak(run + " ", self._fed)
        if found is None and self.rules.regex is not None:
            match = self._find_from(self._rx_from)
            if match is not None:
                found = Finding(self.rules.names.get(match.lastgroup or "", "dont"), match.group(0))
        if found is None and self._facts is not None:
            found = self._judged_fact(self._facts.finish(self._fed))
        if found is None:
            found = self._encoded.finish()
        return found

    def _fact(self, text: str, at: int) -> Finding | None:
        """Grounded facts (:mod:`persona.facts`): a possible fact is held from its first character
        until it is complete, then released, or reported when the reply was not given it."""
        if self._facts is None:
            return None
        return self._judged_fact(self._facts.feed(text, at))

    def _judged_fact(self, finding: Finding | None) -> Finding | None:
        """An ungrounded fact: a violation, or with ``guard.facts.action: log`` a note only."""
        if finding is None:
            return None
        self._fact_notes.append(GuardNote("unsupported_fact", {"fact": finding.detail}))
        return finding if self.brand.guard.facts.action == "fallback" else None

    def _take_notes(self) -> tuple[GuardNote, ...]:
        notes, self._fact_notes = tuple(self._fact_notes), []
        return notes

    # --- release ------------------------------------------------------------------------------------
    def _cut(self) -> int:
        """The raw offset up to which text may go out now."""
        if self.whole_reply or (self._hold_language and self._language is not None and self._language.pending):
            return self._out
        cut = self._fed
        for start in (
            self._folded.held_from(),
            self._cased.held_from() if self._cased is not None else None,
            self._rx_held,
            self._leak_held_from(),
            self._length.held_from(),
            self._facts.held_from() if self._facts is not None else None,
            self._encoded.held_from(),
        ):
            if start is not None and start < cut:
                cut = start
        if self.sentences and cut > self._out:
            cut = min(cut, self._out + self._sentence_cut("".join(self._held)))
        return cut

    def _sentence_cut(self, held: str) -> int:
        """Sentence mode: how much of the held text may go out (whole sentences, or all but the last
        ``window`` characters of a long unfinished one, at a word boundary)."""
        cut = last_sentence_end(held)
        if len(held) - cut > self.window:
            limit = len(held) - self.window
            space = max(held.rfind(" ", cut, limit), held.rfind("\n", cut, limit))
            if space >= 0:
                cut = space + 1
            elif len(held) - cut > self.hard_cap:
                cut = limit
        return cut

    def _release(self, cut: int) -> str:
        if cut <= self._out:
            return ""
        held = "".join(self._held) if len(self._held) > 1 else self._held[0]
        out, rest = held[: cut - self._out], held[cut - self._out :]
        self._held = [rest] if rest else []
        self._released.append(out)
        self._out = cut
        return out

    def _violate(self, finding: Finding) -> GuardStep:
        self._stopped = True
        self._held = []
        return GuardStep(violation=finding.rule, notes=self._take_notes())

    def _trim(self, full: str) -> GuardStep:
        """``finish_reason: length``: end on the last whole sentence."""
        end = last_sentence_end(full)
        if end >= len(full.rstrip()):
            return GuardStep(release=self._release(self._fed))  # it ended on a whole sentence anyway
        if end == 0:
            if self.brand.fallbacks.truncated:
                self._stopped = True
                return GuardStep(violation="truncated")
            return GuardStep(release=self._release(self._fed))  # no whole sentence, no fallback: as cut
        if end >= self._out:
            release = self._release(end)
            self._held = []
            return GuardStep(release=release)
        # The cut sentence was partly out already: withdraw it, keep the whole sentences.
        self._stopped = True
        return GuardStep(violation="truncated", replacement=full[:end].rstrip())


_BITS: dict[int, tuple[int, ...]] = {}


def _bits(mask: int) -> tuple[int, ...]:
    """The bits set in ``mask`` (a set of the pattern's groups), lowest first; remembered."""
    bits = _BITS.get(mask)
    if bits is None:
        if len(_BITS) >= 65536:
            _BITS.clear()
        bits = _BITS[mask] = tuple(i for i in range(mask.bit_length()) if mask >> i & 1)
    return bits


def _continues_word(text: str) -> bool:
    """Whether the next character could still be part of the last word of ``text``."""
    last = text[-1]
    return last.isalnum() or last == "_"


def brand_guard(brand: Brand, context: GuardContext | None = None, /) -> ReplyGuard:
    """The :data:`GuardFactory` the server uses."""
    return BrandGuard(brand, context)
