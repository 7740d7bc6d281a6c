"""Errors of the reply pipeline.

Tree::

    WireError (streaming.codes)   code, message, stream_id
    └── ReplyRefused              a send that starts no reply
        └── ShuttingDown          503 / close 1012 — this instance stops; send again elsewhere

    ReplyStopped                  internal: why generation stopped early (never reaches a client)
    ├── StreamFull                the stream reached its size cap → ``finish_reason: length``
    └── GuardViolation            the guard fired → the brand's fallback (``reply.ending``)
"""

from __future__ import annotations

from streaming.codes import WireError


class ReplyRefused(WireError):
    code = "internal"


class ShuttingDown(ReplyRefused):
    code = "shutting_down"


class ReplyStopped(Exception):
    """Generation stopped before the upstream finished; the job ends the stream accordingly."""


class StreamFull(ReplyStopped):
    pass


class GuardViolation(ReplyStopped):
    def __init__(self, rule: str, replacement: str | None = None) -> None:
        super().__init__(rule)
        self.rule = rule
        self.replacement = replacement  # the guard's own replacement text (a trimmed reply), if any

    def __repr__(self) -> str:
        return f"GuardViolation(rule={self.rule!r})"
