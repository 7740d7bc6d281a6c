"""The streaming guardrail seam: every piece of upstream text passes through a ``ReplyGuard``.

A guard may hold text back (a holdback window), release it, or report a violation; the generation
job then stops the upstream call and replaces what was streamed with the brand's fallback
(``retract`` + ``done{finish_reason: fallback}``). A guard is made per upstream attempt, so text
held back when an attempt fails is simply dropped (the client never saw it).

:class:`PassThroughGuard` releases everything at once; the brand-aware guard builds on this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from persona.brand import Brand


@dataclass(frozen=True)
class GuardStep:
    release: str = ""  # text that may go to clients now
    violation: str | None = None  # the rule that fired; the reply is replaced
    fallback: str | None = None  # the replacement text (the brand's fallback for that rule)


class ReplyGuard(Protocol):
    def feed(self, text: str) -> GuardStep:
        """Take the next upstream text; cheap and synchronous (it runs per token)."""
        ...

    def finish(self, finish_reason: str) -> GuardStep:
        """The upstream ended: release what is held back, or report a violation."""
        ...


GuardFactory = Callable[[Brand], ReplyGuard]


class PassThroughGuard:
    def feed(self, text: str) -> GuardStep:
        return GuardStep(release=text)

    def finish(self, finish_reason: str) -> GuardStep:
        return GuardStep()


def pass_through(brand: Brand) -> ReplyGuard:
    return PassThroughGuard()
