"""Replay-then-follow, the same for every backend.

::

    follower                 buffer                         writer (any instance)
       │  subscribe(stream) ───▶ live events now reach us
       │  read_after(N) ───────▶ events N+1 … K (the log)
       │◀── yield N+1 … K
       │                          ◀── append K+1 + publish ── │
       │◀── live K+1 (Cursor drops duplicates of the replay)
       │  gap / lag / quiet for idle_poll_s ─▶ read_after(cursor) again

Subscribing *before* reading the log means no event can fall between the two; the
:class:`~streaming.log.Cursor` drops the overlap. A lost live message (Redis reconnect, queue
overflow) shows up as a gap, a lag flag or silence, and each triggers a re-read of the log, so
the iterator ends with the terminal event even if live delivery fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from streaming.contract import StreamLog
from streaming.events import StoredEvent
from streaming.exceptions import BufferUnavailable, StreamExpired
from streaming.log import Cursor, Verdict, check_replay


class AlreadyEnded(Exception):
    """The reader already has the stream's terminal event (``after_seq >= last_seq``): there is
    nothing more to send, ever. Edges answer at once (WebSocket ``ended``, SSE 204)."""

    def __init__(self, stream_id: str, last_seq: int) -> None:
        super().__init__(f"stream {stream_id} ended at seq {last_seq}")
        self.stream_id = stream_id
        self.last_seq = last_seq


async def _raise_if_ended(buffer: StreamLog, stream_id: str, after_seq: int) -> None:
    info = await buffer.stream_info(stream_id)
    if info is not None and info.last_seq is not None and info.ended_by(after_seq):
        raise AlreadyEnded(stream_id, info.last_seq)


class _Outage:
    """How long reads of the buffer have been failing; re-raises once that passes the deadline.

    A stream that vanished after it was read (Redis restarted without its data) counts too: its
    producer writes it back within moments, so it is expired only if it stays gone."""

    def __init__(self, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self.since: float | None = None

    def failed(self, started_at: float, exc: Exception) -> None:
        if self.since is None:
            known = exc.since if isinstance(exc, BufferUnavailable) else None
            self.since = min(started_at, known) if known is not None else started_at
        if time.monotonic() - self.since > self.deadline_s:
            raise exc

    def recovered(self) -> None:
        self.since = None


async def follow(
    buffer: StreamLog,
    stream_id: str,
    after_seq: int,
    *,
    idle_poll_s: float,
    unavailable_after_s: float,
    lost_after_s: float | None = None,
    on_replay: Callable[[int], None] | None = None,
) -> AsyncIterator[StoredEvent]:
    """Yield every event with ``seq > after_seq`` exactly once, in order, up to the terminal one.

    ``lost_after_s``: a stream that is still open that long after it was created has lost its
    generation job (its instance crashed: a live job always ends by its total deadline); the
    follower then ends it with a retryable ``error`` (``generation_lost``) so no client waits for
    ever. ``on_replay(n)`` is told how many logged events the first read replayed.
    Raises ``StreamExpired`` when the buffer does not hold the stream (or lost part of it), and
    :class:`AlreadyEnded` when the reader is at or past the terminal event, and ``BufferUnavailable``
    when the buffer could not be read for ``unavailable_after_s`` (live events from this instance
    keep arriving meanwhile, so a local reply that ends in time still reaches its end).
    Cancelling (or closing the generator) is safe and unsubscribes."""
    cursor = Cursor(after_seq)
    outage = _Outage(unavailable_after_s)
    async with buffer.subscribe(stream_id) as sub:
        while True:
            started = time.monotonic()
            try:
                events = await buffer.read_after(stream_id, after_seq)
                break
            except BufferUnavailable as exc:
                outage.failed(started, exc)
                await asyncio.sleep(idle_poll_s)
        outage.recovered()
        check_replay(stream_id, after_seq, events)
        if not events and after_seq > 0:
            await _raise_if_ended(buffer, stream_id, after_seq)
        replay = cursor.take(events)
        if on_replay is not None:
            on_replay(len(replay))
        for event in replay:
            yield event
        while not cursor.finished:
            live = await sub.get(idle_poll_s)
            if live is not None:
                verdict = cursor.judge(live)
                if verdict is Verdict.DUPLICATE:
                    continue
                if verdict is Verdict.DELIVER:
                    cursor.advance(live)
                    yield live
                    continue
            # A gap, a lag or a quiet spell: the log is the truth, read it again.
            quiet = live is None and not sub.lagged
            sub.clear_lag()
            start = cursor.after_seq
            started = time.monotonic()
            try:
                events = await buffer.read_after(stream_id, start)
                check_replay(stream_id, start, events)
            except (BufferUnavailable, StreamExpired) as exc:
                outage.failed(started, exc)
                continue  # live events from this instance still arrive; read again after idle_poll_s
            outage.recovered()
            for replayed in cursor.take(events):
                yield replayed
            if quiet and not events:
                started = time.monotonic()
                try:
                    info = await buffer.stream_info(stream_id)
                except BufferUnavailable as exc:
                    outage.failed(started, exc)
                    continue
                if info is not None and info.last_seq is not None and info.ended_by(cursor.after_seq):
                    raise AlreadyEnded(stream_id, info.last_seq)
                lost = lost_after_s is not None and time.time() - (info.created_at if info else 0) > lost_after_s
                if info is not None and not info.terminal and lost:
                    await buffer.end_abandoned(
                        stream_id, "generation_lost", "the reply was interrupted on the server; send it again"
                    )
