"""Pieces of reply text → delta events, without adding latency."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from reply.exceptions import StreamFull
from streaming.events import StoredEvent
from streaming.log import StreamWriter


class DeltaBatcher:
    """Coalesces upstream pieces into delta events without adding latency.

    The first piece is written at once; pieces that arrive while an append is in flight are
    joined into the next delta. So a fast upstream costs few appends and a slow one costs none
    extra. A piece that does not fit the stream's remaining size raises :class:`StreamFull`
    after the part that does fit was queued. A :meth:`retract` (a failover that could not
    continue the text seamlessly) is written in order with the deltas around it."""

    def __init__(self, writer: StreamWriter, write: Callable[[list[StoredEvent]], Awaitable[None]]) -> None:
        self._writer = writer
        self._write = write
        self._pending: list[str] = []
        self._pending_chars = 0
        self._retract: tuple[str, str] | None = None  # (reason, text), written before the pending text
        self._wake = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._flush_forever(), name=f"deltas-{writer.stream_id}")

    @property
    def text_so_far(self) -> int:
        return self._writer.length + self._pending_chars

    def retract(self, reason: str, text: str) -> None:
        """Replace everything so far (written or pending) with ``text``."""
        if self._task.done():
            self._task.result()
        self._pending.clear()
        self._pending_chars = 0
        self._retract = (reason, text)
        self._wake.set()

    def push(self, text: str) -> None:
        if self._task.done():
            self._task.result()  # re-raise a failed append (buffer unreachable)
        room = self._writer.room()
        if room and self._retract is not None:  # the text will be the retract's, not the writer's
            room = max(0, self._writer.max_chars - len(self._retract[1]))
        room -= self._pending_chars
        full = len(text) > room
        if full:
            text = text[: max(room, 0)]
        if text:
            self._pending.append(text)
            self._pending_chars += len(text)
            self._wake.set()
        if full:
            raise StreamFull

    async def close(self, timeout_s: float) -> None:
        """Write what is pending and stop. Raises if the buffer failed, ``TimeoutError`` after
        ``timeout_s``. Cancelling it leaves the flush running until the batcher's task ends."""
        self._closing = True
        self._wake.set()
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(self._task)

    def abort(self) -> None:
        """Stop flushing and drop the pending text (the buffer could not take it)."""
        self._pending.clear()
        self._pending_chars = 0
        self._retract = None
        self._task.cancel()

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            events: list[StoredEvent] = []
            if self._retract is not None:
                reason, replacement = self._retract
                self._retract = None
                events.append(self._writer.retract(reason, replacement))
            if self._pending:
                text = "".join(self._pending)
                self._pending.clear()
                self._pending_chars = 0
                events.append(self._writer.delta(text))
            if events:
                await self._write(events)
            if self._closing and not self._pending and self._retract is None:
                return
