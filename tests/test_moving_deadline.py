"""streaming.tasks.MovingDeadline: asyncio.timeout for a deadline every piece pushes back."""

from __future__ import annotations

import asyncio

import pytest

from streaming.tasks import MovingDeadline
from testkit import T


async def test_a_deadline_pushed_back_by_every_piece_fires_only_after_the_pieces_stop() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with MovingDeadline() as deadline:
            for _ in range(10):
                deadline.move_to(loop.time() + 0.1 * T)
                await asyncio.sleep(0.03 * T)  # a piece every 30 ms: well inside 100 ms
            deadline.move_to(loop.time() + 0.1 * T)
            await asyncio.sleep(10 * T)  # then silence
    assert loop.time() - started >= 0.3 * T + 0.1 * T


async def test_moving_the_deadline_earlier_rearms_it() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with MovingDeadline() as deadline:
            deadline.move_to(loop.time() + 30 * T)
            deadline.move_to(loop.time() + 0.05 * T)
            await asyncio.sleep(10 * T)
    assert loop.time() - started < 5 * T


async def test_a_cancel_from_outside_is_still_a_cancel_not_a_timeout() -> None:
    async def body() -> None:
        async with MovingDeadline() as deadline:
            deadline.move_to(asyncio.get_running_loop().time() + 30 * T)
            await asyncio.sleep(10 * T)

    task = asyncio.create_task(body())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_block_that_ends_in_time_leaves_no_timer_behind() -> None:
    loop = asyncio.get_running_loop()
    async with MovingDeadline() as deadline:
        deadline.move_to(loop.time() + 0.05 * T)
    await asyncio.sleep(0.1 * T)  # had the timer stayed armed, this task would be cancelled here
