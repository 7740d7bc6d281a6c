"""How a reply ends, decided in one place: pure, no I/O, tested without an event loop.

Every way a generation can stop becomes an :class:`Outcome`; :func:`closing_events` turns it into
the stream's last events, and :func:`fallback_text` is the only place that picks which of the
brand's fallback replies replaces a reply::

    outcome                                   closing events
    ─────────────────────────────────────     ──────────────────────────────────────────────
    upstream finished (stop / length)         done(stop | length)
    cancelled by the client                   done(cancelled)
    the size cap was reached                  done(length)
    the guard fired (rule)                    retract(rule, fallback) | delta(fallback), done(fallback)
    the upstream failed, brand has `error`    retract(code, error fallback) | delta(…), done(fallback)
    the upstream failed, no `error` fallback  error(code, message, retryable)
    this instance shut down mid-reply         error(shutting_down, retryable)
    the shared buffer stayed down too long    error(buffer_unavailable, retryable)

A ``retract`` withdraws text clients already have; when nothing was streamed yet the fallback is
simply the first delta.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from llm.exceptions import UpstreamError
from persona.brand import Fallbacks
from streaming.events import FinishReason, StoredEvent
from streaming.log import StreamWriter

#: Which fallback a guard rule gets: replies that left the brand's topics get ``off_topic``;
#: replies that broke a rule of voice get ``off_brand``; a fact the reply was not given gets ``unsure``
#: (``off_brand`` when the brand has none). Unknown rules get ``off_brand``.
FALLBACK_KIND: Final[dict[str, str]] = {
    "banned_phrase": "off_brand",
    "filler": "off_brand",
    "competitor": "off_brand",
    "dont": "off_brand",
    "emoji": "off_brand",
    "tone": "off_brand",
    "promise": "off_brand",
    "meta_talk": "off_topic",
    "refusal": "off_topic",
    "prompt_leak": "off_topic",
    "off_topic": "off_topic",
    "unsupported_fact": "unsure",
    # Sentence reviews beside the stream (reply/reviewers.py): the model's second opinion names a
    # rule of any kind, so it gets the voice fallback; a paraphrased leak or a reply off the
    # brand's domain gets the topic one, as their streaming counterparts do.
    "review": "off_brand",
    "semantic_leak": "off_topic",
    "semantic_off_topic": "off_topic",
}

#: What an end user reads when the upstream failed: a plain sentence per code. The upstream's own
#: words (status lines, provider messages, masked keys) go to the logs only (``reply/jobs.py``).
FAILURE_MESSAGES: Final[dict[str, str]] = {
    "upstream_timeout": "The assistant took too long to answer. Please try again.",
    "upstream_unavailable": "The assistant is not reachable right now. Please try again in a moment.",
    "rate_limited": "The assistant is busy right now. Please try again in a moment.",
}
FAILURE_MESSAGE = "The assistant could not answer this time. Please try again."


def fallback_text(fallbacks: Fallbacks, rule: str) -> str:
    """The brand's replacement for a reply stopped by ``rule``."""
    if rule == "empty":  # the model sent nothing
        return fallbacks.error or fallbacks.off_topic
    if rule == "truncated":  # cut by the length limit with no whole sentence
        return fallbacks.truncated or fallbacks.off_brand
    if rule == "unsupported_fact":  # a figure or name the reply was not given (guard.facts)
        return fallbacks.unsure or fallbacks.off_brand
    if FALLBACK_KIND.get(rule, "off_brand") == "off_topic":
        return fallbacks.off_topic
    return fallbacks.off_brand


@dataclass(frozen=True)
class Outcome:
    """Why generation stopped. At most one of ``violation``, ``failure`` and ``shutdown`` is set."""

    finish: FinishReason = "stop"  # when it stopped normally: stop, length or cancelled
    violation: str | None = None  # the guard rule that fired
    replacement: str | None = None  # the guard's own replacement (a trimmed reply), else the fallback
    failure: UpstreamError | None = None
    shutdown: bool = False
    buffer_unavailable: bool = False  # the shared buffer stayed unreachable past its deadline


def closing_events(writer: StreamWriter, fallbacks: Fallbacks, outcome: Outcome) -> list[StoredEvent]:
    """The events that end the stream, the terminal one last (see the module docstring)."""
    if outcome.shutdown:
        return [writer.error("shutting_down", "the server restarted before the reply ended", retryable=True)]
    if outcome.buffer_unavailable:
        message = "the reply could not be stored; send the message again in a moment"
        return [writer.error("buffer_unavailable", message, retryable=True)]
    if outcome.violation is not None:
        text = outcome.replacement if outcome.replacement is not None else fallback_text(fallbacks, outcome.violation)
        return [*_replace_with(writer, outcome.violation, text), writer.done("fallback")]
    if outcome.failure is not None:
        failure = outcome.failure
        if fallbacks.error:
            return [*_replace_with(writer, failure.code, fallbacks.error), writer.done("fallback")]
        message = FAILURE_MESSAGES.get(failure.code, FAILURE_MESSAGE)
        return [writer.error(failure.code, message, retryable=failure.retryable)]
    return [writer.done(outcome.finish)]


def _replace_with(writer: StreamWriter, reason: str, text: str) -> list[StoredEvent]:
    """Withdraw what was streamed (if anything) in favour of ``text``."""
    if writer.length:
        return [writer.retract(reason, text)]
    return [writer.delta(text)] if text else []
