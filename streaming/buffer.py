"""The stream buffer: the contract's three parts together, and the choice of backend by URL.

Backends: ``memory://`` (:mod:`streaming.memory`, one process) and ``redis://`` /
``rediss://`` (:mod:`streaming.redis_buffer`, shared by every instance). The contract's parts and
records are in :mod:`streaming.contract`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from streaming.contract import BufferOptions, ControlBus, ConversationStore, ProducerLeases, StreamLog
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


def make_buffer(url: str, options: BufferOptions) -> StreamBuffer:
    """The backend for a ``BUFFER_URL``: ``memory://`` or ``redis://host:port/db``."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "memory":
        return MemoryBuffer(url, options)
    if scheme in {"redis", "rediss", "unix"}:
        return RedisBuffer(url, options)
    raise ValueError(f"BUFFER_URL scheme {scheme!r} is not supported (use memory:// or redis://)")
