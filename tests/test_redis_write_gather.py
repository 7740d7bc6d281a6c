"""The Redis writer's gather window (``REDIS_WRITE_GATHER_MS``): what many streams append within the
window goes to Redis in one script call; a write after a quiet spell is not held back by it."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import redis.asyncio as aioredis

from streaming.buffer import make_buffer
from streaming.log import StreamWriter
from testkit import T
from tests.test_buffer_contract import buffer_options

WINDOW_S = 1.0  # long, so that what the test asserts does not depend on how loaded the machine is
STREAMS = 10


async def script_calls(url: str) -> int:
    admin = aioredis.Redis.from_url(url)
    try:
        stats = await admin.info("commandstats")
    finally:
        await admin.aclose()
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_appends_within_the_window_share_one_write_and_a_lone_one_goes_at_once(redis_url: str) -> None:
    buffer = make_buffer(redis_url, dataclasses.replace(buffer_options(), write_gather_s=WINDOW_S))
    await buffer.start()
    try:
        writers = [StreamWriter(f"s_{n}", max_events=100, max_chars=1_000) for n in range(STREAMS)]
        for writer in writers:
            await buffer.create_stream(writer.stream_id, "c_1", 60)
        await asyncio.gather(*(buffer.append(w.stream_id, [w.start("c_1", w.stream_id)]) for w in writers))
        await asyncio.sleep(WINDOW_S)  # a quiet spell: the next write may start at once

        started = time.monotonic()
        await buffer.append("s_0", [writers[0].delta("alone ")])
        assert time.monotonic() - started < WINDOW_S / 2 * T, "a write after a quiet spell waited for the window"

        # Right after that write, every stream appends: they wait for the window, then go together.
        before = await script_calls(redis_url)
        started = time.monotonic()
        await asyncio.gather(*(buffer.append(writer.stream_id, [writer.delta("together ")]) for writer in writers))
        waited = time.monotonic() - started
        assert await script_calls(redis_url) - before == 1
        assert waited > WINDOW_S / 4, "the appends were written before the window had passed"
        for writer in writers:
            texts = [e.data for e in await buffer.read_after(writer.stream_id, 1)]
            assert texts[-1].endswith('"text":"together "}'), texts
    finally:
        await buffer.close()
