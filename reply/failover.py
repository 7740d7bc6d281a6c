"""Continuing a reply another instance started: the pure part (no I/O, tested without a loop).

When a producer dies, another instance takes its stream over (``reply/jobs.py``) and generates the
reply again from the same prompt; clients already have ``shown``, the text up to the last durable
seq. :class:`Continuation` splices the new generation onto it::

    new text so far is a prefix of what was shown   → nothing to send yet (clients have it)
    new text extends what was shown                  → send only the extension: seamless
    new text departs from what was shown             → retract(failover, new text so far), then
                                                       the rest as deltas
    the new reply ends inside what was shown         → retract(failover, the new, shorter reply)

With a deterministic provider (the offline demo, a model at temperature 0 served by a cache) a
failover is invisible; otherwise clients see one ``retract`` with ``reason: "failover"``, the same
for every follower and every later replay (PROTOCOL §9). The alternative, asking the model to
continue an assistant-prefix, is not part of the Chat Completions API most servers speak.
"""

from __future__ import annotations

from dataclasses import dataclass

from streaming.events import FAILOVER_REASON

FAILOVER = FAILOVER_REASON  # the retract reason


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Retract:
    text: str
    reason: str = FAILOVER


Op = Delta | Retract


class Continuation:
    def __init__(self, shown: str) -> None:
        self.shown = shown
        self._new: list[str] = []
        self._new_len = 0
        self._spliced = not shown  # nothing shown: every piece goes straight out

    @property
    def spliced(self) -> bool:
        """True once the new text has left what clients were shown (pieces pass straight on)."""
        return self._spliced

    def feed(self, text: str) -> list[Op]:
        if self._spliced:
            return [Delta(text)] if text else []
        self._new.append(text)
        self._new_len += len(text)
        if self._new_len <= len(self.shown):
            new = "".join(self._new)
            if self.shown.startswith(new):
                return []
            return self._depart(new)
        new = "".join(self._new)
        self._spliced = True
        if new.startswith(self.shown):
            extension = new[len(self.shown) :]
            return [Delta(extension)] if extension else []
        return [Retract(new)]

    def finish(self) -> list[Op]:
        """The new reply ended. If it ended inside what was shown, withdraw the rest."""
        if self._spliced:
            return []
        self._spliced = True
        new = "".join(self._new)
        return [] if new == self.shown else [Retract(new)]

    def _depart(self, new: str) -> list[Op]:
        self._spliced = True
        return [Retract(new)]
