"""In-process fan-out of live stream events to the followers on this instance.

Each follower owns a :class:`Subscription` with a bounded queue. Overflow policy: when a
follower falls ``maxsize`` events behind, its queue is dropped and the subscription is marked
*lagged*; the follower then re-reads the missed events from the log (which holds them anyway),
so a slow reader costs a read, never unbounded memory and never a lost word.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from streaming.events import StoredEvent
from streaming.tasks import Doorbell


class Subscription(Doorbell):
    """One follower's bounded queue of live events (see the module docstring for overflow).

    The hot path allocates as little as it can (STYLE.md, "The hot path"): an event that is already
    queued is returned with no allocation at all; a follower that has to wait creates one future,
    which ``push`` completes. No task, no ``asyncio.wait``, and no timer per event: the wait's
    deadline is one timer per subscription, armed lazily and pushed back when it fires early (the
    idle-timer trick), so a follower receiving 20 events a second re-arms it once per ``wait_s``."""

    __slots__ = ("_events", "_lagged", "_maxsize", "stream_id")

    def __init__(self, stream_id: str, maxsize: int) -> None:
        super().__init__()
        self.stream_id = stream_id
        self._maxsize = maxsize
        self._events: deque[StoredEvent] = deque()
        self._lagged = False

    @property
    def lagged(self) -> bool:
        return self._lagged

    def push(self, event: StoredEvent) -> None:
        if self._lagged:
            return
        if 0 < self._maxsize <= len(self._events):
            # Overflow: forget the queued events; the follower re-reads the log.
            self._events.clear()
            self._lagged = True
        else:
            self._events.append(event)
        self.ring()

    def mark_lagged(self) -> None:
        """Tell the follower it may have missed events (e.g. the Redis reader reconnected)."""
        self._lagged = True
        self.ring()

    def clear_lag(self) -> None:
        self._lagged = False

    async def get(self, wait_s: float) -> StoredEvent | None:
        """The next live event, or ``None`` after ``wait_s`` seconds or when lagged.

        Cancelling is safe: no event is consumed unless returned."""
        if self._lagged:
            return None
        if self._events:
            return self._events.popleft()
        await self.wait(wait_s)
        if self._lagged or not self._events:
            return None  # lagged, or the deadline passed
        return self._events.popleft()


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
        sub.close()
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

    def streams(self) -> list[str]:
        return list(self._subs)

    def __len__(self) -> int:
        return sum(len(s) for s in self._subs.values())
