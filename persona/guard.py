"""The streaming guardrail: every piece of upstream text passes through a ``ReplyGuard``.

A guard may hold text back (a holdback window), release it, or report a violation; the reply
pipeline then stops the upstream call and replaces what was streamed with the brand's fallback
(``retract`` + ``done{finish_reason: fallback}``). A guard is made per upstream attempt, so text
held back when an attempt fails is simply dropped (the client never saw it).

:class:`BrandGuard` is the real one. Its holdback window is *about a sentence*::

    upstream:  "Our beans ship Monday. As an AI lang|uage model …"
                └──── released ─────┘└── held ───┘
                 (a whole sentence,    (the unfinished sentence: checked again with every
                  checked, goes out)    token; released when it ends, or — if it runs past
                                        ``holdback_chars`` — all but its last holdback_chars)

Held text is checked *before* it is released (:mod:`persona.checks`: banned phrases, filler,
competitors, don't-patterns, emoji policy, refusals, the prompt's canary, recited instructions),
and the window is never shorter than the longest phrase, so no prefix of a banned phrase ever
reaches a client: a resumed client can only ever see moderated text. At the end of a reply:

* empty output → the ``error`` fallback (else ``off_topic``);
* ``finish_reason: length`` → trimmed to the last whole sentence (a ``retract`` if the cut part
  was already out), or the ``truncated`` fallback when there is no whole sentence;
* off-topic (domain coverage under the brand's threshold) → a ``GuardNote("off_topic")`` that the
  job logs and reports through its hooks; with ``guard.off_topic.action: fallback`` also replaced.

When an attempt ends early (upstream error, cancel, deadline) the job calls
``finish(ABORTED)``: held text that passed every check is released, so the client keeps the
text so far exactly as without a guard.

:class:`PassThroughGuard` releases everything at once (benchmarks compare against it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from persona.brand import Brand
from persona.checks import LEAK_N, CompiledRules, Finding, compile_rules, coverage
from persona.text import last_sentence_end, words

ABORTED = "aborted"  # finish reason for an attempt that ended without the upstream finishing


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


@dataclass(frozen=True)
class GuardContext:
    """What a guard may know about the request: the question and the text it was given
    (retrieved facts, recent turns), for the end-of-reply relevance check."""

    question: str = ""
    context: tuple[str, ...] = field(default_factory=tuple)


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


class BrandGuard:
    """The brand's rules over a streamed reply (see the module docstring)."""

    def __init__(self, brand: Brand, context: GuardContext | None = None) -> None:
        self.brand = brand
        self.context = context or GuardContext()
        self.rules: CompiledRules = compile_rules(brand)
        # Never shorter than the longest literal phrase: a phrase is complete before any of it leaves.
        self.window = max(brand.guard.holdback_chars, self.rules.longest_literal)
        self.hard_cap = max(4 * self.window, 512)  # a "sentence" with no spaces at all: cut mid-word
        self._held = ""
        self._tail = ""  # the end of the released text, so a check can span the boundary
        self._released: list[str] = []
        self._released_len = 0
        self._recent_words: deque[str] = deque(maxlen=LEAK_N)
        self._partial_word = ""
        self._stopped = False

    # --- streaming ----------------------------------------------------------------------------------
    def feed(self, text: str) -> GuardStep:
        if self._stopped or not text:
            return GuardStep()
        self._held += text
        window = self._tail + self._held
        # Anything ending before the new text was scanned already; patterns span at most a window.
        start = len(window) - len(text) - self.window
        finding = self.rules.scan(window, start) or self._leak(text)
        if finding is not None:
            return self._violate(finding)
        return GuardStep(release=self._release(self._cut()))

    def finish(self, finish_reason: str) -> GuardStep:
        if self._stopped:
            return GuardStep()
        if finish_reason == ABORTED:
            return GuardStep(release=self._release(len(self._held)))
        full = "".join(self._released) + self._held
        if not full.strip():
            return self._violate(Finding("empty", "the model sent no text"))
        if finish_reason == "length":
            return self._trim(full)
        notes: tuple[GuardNote, ...] = ()
        check = self.brand.guard.off_topic
        scored = coverage(self.brand, full, (self.context.question, *self.context.context))
        if scored is not None and scored[0] < check.threshold:
            notes = (
                GuardNote(
                    "off_topic",
                    {
                        "score": round(scored[0], 3),
                        "threshold": check.threshold,
                        "terms": scored[1],
                        "action": check.action,
                    },
                ),
            )
            if check.action == "fallback":
                self._stopped = True
                return GuardStep(violation="off_topic", notes=notes)
        return GuardStep(release=self._release(len(self._held)), notes=notes)

    # --- internals ----------------------------------------------------------------------------------
    def _cut(self) -> int:
        """How much of the held text may go out now."""
        held = self._held
        cut = last_sentence_end(held)  # whole sentences have been checked: they go
        if len(held) - cut > self.window:
            # A long unfinished sentence: release all but the last `window` chars, at a word boundary.
            limit = len(held) - self.window
            space = max(held.rfind(" ", cut, limit), held.rfind("\n", cut, limit))
            if space >= 0:
                cut = space + 1
            elif len(held) - cut > self.hard_cap:
                cut = limit
        return cut

    def _release(self, cut: int) -> str:
        if cut <= 0:
            return ""
        out, self._held = self._held[:cut], self._held[cut:]
        self._released.append(out)
        self._released_len += len(out)
        self._tail = (self._tail + out)[-self.window :]
        return out

    def _leak(self, text: str) -> Finding | None:
        """Recited instructions: check each newly completed word's ``LEAK_N``-gram."""
        if not self.rules.shingles:
            return None
        buf = (self._partial_word + text).lower()
        start = len(buf)
        while start > 0 and (buf[start - 1].isalnum() or buf[start - 1] == "'"):
            start -= 1  # the last word may go on in the next piece
        self._partial_word = buf[start:]
        for word in words(buf[:start]):
            self._recent_words.append(word)
            if len(self._recent_words) == LEAK_N and tuple(self._recent_words) in self.rules.shingles:
                return Finding("prompt_leak", " ".join(self._recent_words))
        return None

    def _violate(self, finding: Finding) -> GuardStep:
        self._stopped = True
        self._held = ""
        return GuardStep(violation=finding.rule)

    def _trim(self, full: str) -> GuardStep:
        """``finish_reason: length``: end on the last whole sentence."""
        end = last_sentence_end(full)
        if end >= len(full.rstrip()):
            return GuardStep(release=self._release(len(self._held)))  # it ended on a whole sentence anyway
        if end == 0:
            if self.brand.fallbacks.truncated:
                self._stopped = True
                return GuardStep(violation="truncated")
            return GuardStep(release=self._release(len(self._held)))  # no whole sentence, no fallback: as cut
        if end >= self._released_len:
            release = self._release(end - self._released_len)
            self._held = ""
            return GuardStep(release=release)
        # The cut sentence was partly out already: withdraw it, keep the whole sentences.
        self._stopped = True
        return GuardStep(violation="truncated", replacement=full[:end].rstrip())


def brand_guard(brand: Brand, context: GuardContext | None = None, /) -> ReplyGuard:
    """The :data:`GuardFactory` the server uses."""
    return BrandGuard(brand, context)
