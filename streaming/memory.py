"""``memory://`` — the embedded, single-process buffer (the default for ``make run``).

Bounded: every stream and conversation has an expiry (swept lazily on access and by a
periodic sweeper), and a stream's size is capped by its writer. Nothing survives a restart:
a client resuming after one is told ``stream_expired``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace

from streaming.contract import (
    AssistantTurn,
    BufferOptions,
    CancelHandler,
    LeaseLostHandler,
    Orphan,
    ReplyStatus,
    StreamInfo,
    StreamOrigin,
    Turn,
)
from streaming.events import ErrorEvent, StoredEvent, encode
from streaming.exceptions import StreamExpired
from streaming.fanout import Fanout, Subscription


@dataclass
class _Stream:
    conversation_id: str
    created_at: float
    expires_at: float
    events: list[StoredEvent] = field(default_factory=list)
    terminal: bool = False


# Expired entries are also dropped lazily on access; the sweep only bounds memory held by
# streams and conversations nobody asks for again, so it can be infrequent.
SWEEP_INTERVAL_S = 30.0


@dataclass
class _Conversation:
    expires_at: float
    turns: list[Turn] = field(default_factory=list)
    messages: dict[str, str] = field(default_factory=dict)
    replies: dict[str, tuple[str, ReplyStatus, int | None]] = field(default_factory=dict)


class MemoryBuffer:
    """One process only: every instance has its own, so use Redis for more than one worker."""

    def __init__(self, url: str, options: BufferOptions, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self._conversation_ttl_s = options.conversation_ttl_s
        self._resume_window_s = options.resume_window_s
        self._subscription_maxsize = options.subscription_maxsize
        self._clock = clock
        self._streams: dict[str, _Stream] = {}
        self._conversations: dict[str, _Conversation] = {}
        self._fanout = Fanout()
        self._cancel_handler: CancelHandler | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="memory-buffer-sweeper")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def ping(self) -> None:
        return None

    # --- streams ------------------------------------------------------------------------------
    def _stream(self, stream_id: str) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None or stream.expires_at <= self._clock():
            self._streams.pop(stream_id, None)
            raise StreamExpired(f"stream {stream_id} is not in the buffer (expired or unknown)", stream_id=stream_id)
        return stream

    async def create_stream(
        self, stream_id: str, conversation_id: str, ttl_s: int, client_message_id: str | None = None
    ) -> str:
        now = self._clock()
        self._streams[stream_id] = _Stream(conversation_id, time.time(), now + ttl_s)
        if client_message_id is None:
            return stream_id
        return await self.claim_message(conversation_id, client_message_id, stream_id)

    async def append(self, stream_id: str, events: Sequence[StoredEvent], *, expire_after_s: int | None = None) -> None:
        stream = self._stream(stream_id)
        stream.events.extend(events)
        if expire_after_s is not None:
            stream.terminal = True
            stream.expires_at = self._clock() + expire_after_s
        self._fanout.publish(stream_id, events)

    async def read_after(self, stream_id: str, after_seq: int) -> list[StoredEvent]:
        stream = self._stream(stream_id)
        # seq n sits at index n-1: the writer numbers without gaps.
        return stream.events[max(after_seq, 0) :]

    async def stream_info(self, stream_id: str) -> StreamInfo | None:
        try:
            stream = self._stream(stream_id)
        except StreamExpired:
            return None
        last = len(stream.events) if stream.terminal else None
        return StreamInfo(stream_id, stream.conversation_id, stream.created_at, stream.terminal, last)

    async def end_abandoned(self, stream_id: str, code: str, message: str) -> None:
        try:
            stream = self._stream(stream_id)
        except StreamExpired:
            return
        if stream.terminal:
            return
        seq = len(stream.events) + 1
        event = encode(ErrorEvent(stream_id=stream_id, seq=seq, code=code, message=message, retryable=True))
        await self.append(stream_id, [event], expire_after_s=self._resume_window_s)

    @contextlib.asynccontextmanager
    async def subscribe(self, stream_id: str) -> AsyncIterator[Subscription]:
        sub = Subscription(stream_id, self._subscription_maxsize)
        self._fanout.add(sub)
        try:
            yield sub
        finally:
            self._fanout.remove(sub)

    # --- conversations ------------------------------------------------------------------------
    def _conversation(self, conversation_id: str) -> _Conversation:
        now = self._clock()
        conv = self._conversations.get(conversation_id)
        if conv is None or conv.expires_at <= now:
            conv = _Conversation(now + self._conversation_ttl_s)
            self._conversations[conversation_id] = conv
        conv.expires_at = now + self._conversation_ttl_s
        return conv

    async def claim_message(self, conversation_id: str, client_message_id: str, stream_id: str) -> str:
        return self._conversation(conversation_id).messages.setdefault(client_message_id, stream_id)

    async def add_turn(self, conversation_id: str, *turns: Turn) -> None:
        self._conversation(conversation_id).turns.extend(turns)

    async def finish_reply(
        self, conversation_id: str, stream_id: str, text: str, status: ReplyStatus, *, tokens: int | None = None
    ) -> None:
        self._conversation(conversation_id).replies[stream_id] = (text, status, tokens)

    async def history(self, conversation_id: str) -> list[Turn]:
        conv = self._conversations.get(conversation_id)
        if conv is None or conv.expires_at <= self._clock():
            return []
        out: list[Turn] = []
        for turn in conv.turns:
            if isinstance(turn, AssistantTurn) and turn.stream_id in conv.replies:
                text, status, tokens = conv.replies[turn.stream_id]
                turn = replace(turn, text=text, status=status, tokens=tokens)
            out.append(turn)
        return out

    # --- control ------------------------------------------------------------------------------
    async def request_cancel(self, stream_id: str) -> None:
        if self._cancel_handler is not None:
            await self._cancel_handler(stream_id)

    def on_cancel(self, callback: CancelHandler) -> None:
        self._cancel_handler = callback

    # --- producer leases: one process, so no stream is ever orphaned while it runs ---------------
    async def start_production(self, stream_id: str, origin: StreamOrigin, first: Sequence[StoredEvent]) -> None:
        await self.append(stream_id, first)

    async def orphans(self) -> list[str]:
        return []

    async def take_over(self, stream_id: str) -> Orphan | None:
        return None

    def on_lease_lost(self, callback: LeaseLostHandler) -> None:
        return None

    # --- housekeeping -------------------------------------------------------------------------
    def sweep(self) -> int:
        """Drop expired streams and conversations; returns how many were dropped."""
        now = self._clock()
        dead_streams = [sid for sid, s in self._streams.items() if s.expires_at <= now]
        for sid in dead_streams:
            del self._streams[sid]
        dead_convs = [cid for cid, c in self._conversations.items() if c.expires_at <= now]
        for cid in dead_convs:
            del self._conversations[cid]
        return len(dead_streams) + len(dead_convs)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            self.sweep()
