"""The stream buffer contract, and the choice of backend by URL scheme.

A buffer keeps, per stream, the append-only event log and a little metadata; per conversation,
the turns and the ``client_message_id → stream_id`` map that makes sends idempotent. It also
carries the one control message that must cross instances: "cancel this stream".

Backends: ``memory://`` (:mod:`streaming.memory`, one process) and ``redis://`` /
``rediss://`` (:mod:`streaming.redis_buffer`, shared by every instance).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from streaming.events import StoredEvent
from streaming.fanout import Subscription


@dataclass(frozen=True)
class StreamInfo:
    stream_id: str
    conversation_id: str
    created_at: float
    terminal: bool


@runtime_checkable
class StreamBuffer(Protocol):
    """What the server needs from a buffer backend. All methods are coroutine-safe.

    Cancelling any coroutine here is safe: reads have no side effects, and a cancelled append may
    still be written (its events are numbered, so a retry cannot duplicate them)."""

    url: str

    async def start(self) -> None:
        """Connect and start background tasks (the Redis reader). Raises if unreachable."""

    async def close(self) -> None:
        """Stop background tasks and release connections."""

    async def ping(self) -> None:
        """Raise if the backend cannot serve requests (for ``/readyz``)."""

    # --- streams ----------------------------------------------------------------------------
    async def create_stream(self, stream_id: str, conversation_id: str, ttl_s: int) -> None:
        """Record a new, empty stream that lives ``ttl_s`` at most unless ended earlier."""

    async def append(self, stream_id: str, events: Sequence[StoredEvent], *, expire_after_s: int | None = None) -> None:
        """Append events (already numbered by the single writer) and tell live followers.

        ``expire_after_s`` is given with the terminal event: the stream is marked terminal and
        expires that long after. Raises ``StreamExpired`` if the stream is gone."""

    async def read_after(self, stream_id: str, after_seq: int) -> list[StoredEvent]:
        """The events with ``seq > after_seq``, in order. Raises ``StreamExpired`` if unknown."""

    async def stream_info(self, stream_id: str) -> StreamInfo | None:
        """Metadata of a stream, or ``None`` when the buffer does not hold it."""

    async def end_abandoned(self, stream_id: str, code: str, message: str) -> None:
        """End a stream whose writer is gone with a retryable ``error``, atomically: a no-op if
        the stream already ended, and safe to race with other followers doing the same."""

    def subscribe(self, stream_id: str) -> AbstractAsyncContextManager[Subscription]:
        """Receive live events of a stream; active (nothing missed) once entered."""

    # --- conversations ----------------------------------------------------------------------
    async def claim_message(self, conversation_id: str, client_message_id: str, stream_id: str) -> str:
        """Atomically bind a client message id to a stream; returns the stream that won."""

    async def add_turn(self, conversation_id: str, turn: dict[str, Any]) -> None:
        """Append a turn (user message or assistant placeholder) to the conversation."""

    async def finish_reply(self, conversation_id: str, stream_id: str, text: str, status: str) -> None:
        """Record the final text and status of an assistant turn."""

    async def history(self, conversation_id: str) -> list[dict[str, Any]]:
        """The conversation's turns; assistant turns carry ``text`` and ``status`` when ended."""

    # --- control ----------------------------------------------------------------------------
    async def request_cancel(self, stream_id: str) -> None:
        """Ask whichever instance runs the stream's generation to cancel it."""

    def on_cancel(self, callback: Callable[[str], Coroutine[Any, Any, None]]) -> None:
        """Register the local handler for cancel requests (from any instance)."""


def make_buffer(url: str, **options: Any) -> StreamBuffer:
    """The backend for a ``BUFFER_URL``: ``memory://`` or ``redis://host:port/db``."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "memory":
        from streaming.memory import MemoryBuffer

        return MemoryBuffer(url, **options)
    if scheme in {"redis", "rediss", "unix"}:
        from streaming.redis_buffer import RedisBuffer

        return RedisBuffer(url, **options)
    raise ValueError(f"BUFFER_URL scheme {scheme!r} is not supported (use memory:// or redis://)")
