"""In-process fan-out of live stream events to the followers on this instance.

Each follower owns a :class:`Subscription` with a bounded queue. Overflow policy: when a
follower falls ``maxsize`` events behind, its queue is dropped and the subscription is marked
*lagged*; the follower then re-reads the missed events from the log (which holds them anyway),
so a slow reader costs a read, never unbounded memory and never a lost word.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from streaming.events import StoredEvent


class Subscription:
    def __init__(self, stream_id: str, maxsize: int) -> None:
        self.stream_id = stream_id
        self._queue: asyncio.Queue[StoredEvent] = asyncio.Queue(maxsize=maxsize)
        self._lagged = asyncio.Event()

    @property
    def lagged(self) -> bool:
        return self._lagged.is_set()

    def push(self, event: StoredEvent) -> None:
        if self._lagged.is_set():
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            # Overflow: forget the queued events; the follower re-reads the log.
            while not self._queue.empty():
                self._queue.get_nowait()
            self._lagged.set()

    def mark_lagged(self) -> None:
        """Tell the follower it may have missed events (e.g. the Redis reader reconnected)."""
        self._lagged.set()

    def clear_lag(self) -> None:
        self._lagged.clear()

    async def get(self, wait_s: float) -> StoredEvent | None:
        """The next live event, or ``None`` after ``wait_s`` seconds or when lagged.

        Cancelling is safe: no event is consumed unless returned."""
        if self._lagged.is_set():
            return None
        if not self._queue.empty():
            return self._queue.get_nowait()
        getter = asyncio.ensure_future(self._queue.get())
        lag = asyncio.ensure_future(self._lagged.wait())
        try:
            await asyncio.wait({getter, lag}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lag.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            event = getter.result()
            if self._lagged.is_set():
                return None
            return event
        return None


class Fanout:
    """stream_id → the subscriptions of this instance."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}

    def add(self, sub: Subscription) -> bool:
        """Register; returns True when it is the first subscription of its stream."""
        subs = self._subs.setdefault(sub.stream_id, set())
        subs.add(sub)
        return len(subs) == 1

    def remove(self, sub: Subscription) -> bool:
        """Unregister; returns True when it was the last subscription of its stream."""
        subs = self._subs.get(sub.stream_id)
        if subs is None:
            return False
        subs.discard(sub)
        if not subs:
            del self._subs[sub.stream_id]
            return True
        return False

    def publish(self, stream_id: str, events: Iterable[StoredEvent]) -> None:
        subs = self._subs.get(stream_id)
        if not subs:
            return
        batch = list(events)
        for sub in list(subs):
            for event in batch:
                sub.push(event)

    def mark_lagged(self, stream_id: str) -> None:
        for sub in self._subs.get(stream_id, ()):
            sub.mark_lagged()

    def mark_all_lagged(self) -> None:
        for subs in self._subs.values():
            for sub in subs:
                sub.mark_lagged()

    def streams(self) -> list[str]:
        return list(self._subs)

    def __len__(self) -> int:
        return sum(len(s) for s in self._subs.values())
