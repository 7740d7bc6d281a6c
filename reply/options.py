"""What the reply pipeline is configured with: built once from ``Settings`` by the composition
root (``api/runtime.py``), never defaulted a second time here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Deadlines:
    """Our own deadlines around the upstream call, independent of the SDK's read timeout."""

    connect_s: float  # until the upstream answers with response headers
    first_token_s: float  # from the request until the first text
    stall_s: float  # longest gap between two pieces of text
    total_s: float  # the whole reply, the retry included
    retry_max_wait_s: float  # the longest ``retry-after`` honoured for the one retry


@dataclass(frozen=True)
class ReplyOptions:
    deadlines: Deadlines
    resume_window_s: int  # a finished stream stays resumable this long
    max_reply_tokens: int  # when the brand sets none
    stream_max_events: int
    stream_max_chars: int
    takeover_sweep_s: float  # how often this instance looks for streams whose producer died
    buffer_outage_deadline_s: float  # the buffer fails an append after this long unreachable


class JobHooks(Protocol):
    """Lifecycle callbacks for monitoring (metrics, tracing). Called synchronously; must be cheap.

    Events and their fields: ``stream_started`` (stream_id, conversation_id, brand), ``first_token``
    (stream_id, brand, seconds), ``token_gap`` (brand, seconds), ``upstream_error`` (stream_id,
    brand, code, status, retryable), ``upstream_retry`` (stream_id, brand, code, wait_s),
    ``guard_fallback`` (stream_id, brand, rule), ``off_topic`` (stream_id, brand, score, threshold,
    terms, action: the end-of-reply relevance check, see ``persona/checks.py``), ``guard_review``
    (stream_id, brand, reviewer, call, outcome, seconds: a sentence review, ``reply/review.py``), ``stream_ended``
    (stream_id, brand, terminal, outcome, seconds)."""

    def __call__(self, event: str, **fields: Any) -> None: ...
