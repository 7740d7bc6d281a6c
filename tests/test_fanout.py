"""The in-process fan-out's subscription: next event, a deadline, lag, and safe cancellation, without
a server (the buffer contract tests cover it over memory and Redis)."""

from __future__ import annotations

import asyncio

import pytest

from streaming.events import StoredEvent
from streaming.fanout import Fanout, Subscription
from testkit import T

pytestmark = pytest.mark.timeout(10)


def event(seq: int) -> StoredEvent:
    return StoredEvent(seq=seq, type="delta", data=f'{{"seq": {seq}}}')


async def test_an_event_queued_before_the_wait_is_returned_at_once() -> None:
    sub = Subscription("s", 8)
    sub.push(event(1))
    assert await sub.get(0) == event(1)


async def test_a_waiting_follower_gets_the_event_pushed_while_it_waits() -> None:
    sub = Subscription("s", 8)
    waiting = asyncio.ensure_future(sub.get(5))
    await asyncio.sleep(0)
    sub.push(event(1))
    sub.push(event(2))
    assert await waiting == event(1)
    assert await sub.get(5) == event(2)


async def test_a_wait_with_nothing_pushed_ends_with_none_after_its_deadline() -> None:
    sub = Subscription("s", 8)
    assert await sub.get(0.01 * T) is None
    assert await sub.get(0.01 * T) is None, "a second wait gets a deadline of its own"


async def test_a_later_wait_is_not_cut_short_by_the_deadline_of_an_earlier_one() -> None:
    sub = Subscription("s", 8)
    first = asyncio.ensure_future(sub.get(0.02 * T))
    await asyncio.sleep(0)
    sub.push(event(1))
    assert await first == event(1)
    second = asyncio.ensure_future(sub.get(5))
    await asyncio.sleep(0.05 * T)  # past the first wait's deadline
    assert not second.done()
    sub.push(event(2))
    assert await second == event(2)


async def test_overflow_drops_the_queue_and_reports_lag_until_cleared() -> None:
    sub = Subscription("s", 2)
    for seq in (1, 2, 3):
        sub.push(event(seq))
    assert sub.lagged and await sub.get(5) is None
    sub.push(event(4))
    assert await sub.get(0) is None, "nothing is queued while lagged"
    sub.clear_lag()
    sub.push(event(5))
    assert await sub.get(0) == event(5)


async def test_being_marked_lagged_wakes_a_waiting_follower() -> None:
    sub = Subscription("s", 8)
    waiting = asyncio.ensure_future(sub.get(5))
    await asyncio.sleep(0)
    sub.mark_lagged()
    assert await waiting is None


async def test_cancelling_a_wait_consumes_nothing() -> None:
    sub = Subscription("s", 8)
    waiting = asyncio.ensure_future(sub.get(5))
    await asyncio.sleep(0)
    sub.push(event(1))  # completes the wait's future, but the waiter is cancelled before it resumes
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await sub.get(0) == event(1)


async def test_the_fanout_delivers_to_every_follower_of_a_stream_and_forgets_the_last_one_removed() -> None:
    fanout = Fanout()
    a, b = Subscription("s", 8), Subscription("s", 8)
    assert fanout.add(a) and not fanout.add(b)
    fanout.publish("s", [event(1)])
    assert await a.get(0) == event(1) and await b.get(0) == event(1)
    assert not fanout.remove(a) and fanout.remove(b)
    assert fanout.streams() == []
