"""The stream buffer: the contract's three parts together, and the choice of backend by URL.

Backends: ``memory://`` (:mod:`streaming.memory`, one process) and ``redis://`` /
``rediss://`` (:mod:`streaming.redis_buffer`, shared by every instance). The contract's parts and
records are in :mod:`streaming.contract`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from streaming.contract import (
    BufferOptions,
    CancelHandler,
    ControlBus,
    ConversationStore,
    LeaseLostHandler,
    Orphan,
    ProducerLeases,
    ReplyStatus,
    StreamInfo,
    StreamLog,
    StreamOrigin,
    Turn,
)
from streaming.events import StoredEvent
from streaming.fanout import Subscription
from streaming.memory import MemoryBuffer
from streaming.redis_buffer import RedisBuffer


@runtime_checkable
class StreamBuffer(StreamLog, ConversationStore, ControlBus, ProducerLeases, Protocol):
    """What the server needs from a buffer backend: the four parts plus a lifecycle."""

    url: str

    async def start(self) -> None:
        """Connect and start background tasks (the Redis reader). Raises if unreachable."""

    async def close(self) -> None:
        """Stop background tasks and release connections."""

    async def ping(self) -> None:
        """Raise if the backend cannot serve requests (for ``/readyz``)."""


class BufferWrapper:
    """A :class:`StreamBuffer` that passes every call to the one it wraps. Wrappers that change a few
    calls (timing them, skipping some writes) subclass it and override only those, so a method added
    to the contract is passed through in one place."""

    def __init__(self, inner: StreamBuffer) -> None:
        self._inner = inner
        self.url = inner.url

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        await self._inner.start()

    async def close(self) -> None:
        await self._inner.close()

    async def ping(self) -> None:
        await self._inner.ping()

    # --- stream log -------------------------------------------------------------------------
    async def create_stream(
        self, stream_id: str, conversation_id: str, ttl_s: int, client_message_id: str | None = None
    ) -> str:
        return await self._inner.create_stream(stream_id, conversation_id, ttl_s, client_message_id)

    async def append(self, stream_id: str, events: Sequence[StoredEvent], *, expire_after_s: int | None = None) -> None:
        await self._inner.append(stream_id, events, expire_after_s=expire_after_s)

    async def read_after(self, stream_id: str, after_seq: int) -> list[StoredEvent]:
        return await self._inner.read_after(stream_id, after_seq)

    async def stream_info(self, stream_id: str) -> StreamInfo | None:
        return await self._inner.stream_info(stream_id)

    async def end_abandoned(self, stream_id: str, code: str, message: str) -> None:
        await self._inner.end_abandoned(stream_id, code, message)

    def subscribe(self, stream_id: str) -> AbstractAsyncContextManager[Subscription]:
        return self._inner.subscribe(stream_id)

    # --- conversations ----------------------------------------------------------------------
    async def claim_message(self, conversation_id: str, client_message_id: str, stream_id: str) -> str:
        return await self._inner.claim_message(conversation_id, client_message_id, stream_id)

    async def add_turn(self, conversation_id: str, *turns: Turn) -> None:
        await self._inner.add_turn(conversation_id, *turns)

    async def finish_reply(
        self, conversation_id: str, stream_id: str, text: str, status: ReplyStatus, *, tokens: int | None = None
    ) -> None:
        await self._inner.finish_reply(conversation_id, stream_id, text, status, tokens=tokens)

    async def history(self, conversation_id: str) -> list[Turn]:
        return await self._inner.history(conversation_id)

    # --- control ----------------------------------------------------------------------------
    async def request_cancel(self, stream_id: str) -> None:
        await self._inner.request_cancel(stream_id)

    def on_cancel(self, callback: CancelHandler) -> None:
        self._inner.on_cancel(callback)

    # --- producer leases --------------------------------------------------------------------
    async def start_production(self, stream_id: str, origin: StreamOrigin, first: Sequence[StoredEvent]) -> None:
        await self._inner.start_production(stream_id, origin, first)

    async def orphans(self) -> list[str]:
        return await self._inner.orphans()

    async def take_over(self, stream_id: str) -> Orphan | None:
        return await self._inner.take_over(stream_id)

    def on_lease_lost(self, callback: LeaseLostHandler) -> None:
        self._inner.on_lease_lost(callback)


def make_buffer(url: str, options: BufferOptions) -> StreamBuffer:
    """The backend for a ``BUFFER_URL``: ``memory://`` or ``redis://host:port/db``."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "memory":
        return MemoryBuffer(url, options)
    if scheme in {"redis", "rediss", "unix"}:
        return RedisBuffer(url, options)
    raise ValueError(f"BUFFER_URL scheme {scheme!r} is not supported (use memory:// or redis://)")
