"""Redis outages don't freeze anyone (issue 9 §2), with real processes: ``python -m api`` instances, a
real ``redis-server`` that is killed, restarted (with and without its append-only file), frozen
(``SIGSTOP``), or cut off by a TCP proxy that stops forwarding without closing anything.

What must hold: a client following a reply on the instance that produces it gets the whole reply or a
terminal ``error`` ``buffer_unavailable`` (retryable) within the outage deadline plus a few seconds,
never silence kept alive by pings; once Redis is back, re-sending the same ``client_message_id``
answers the first stream; a send while Redis is down is refused at once with ``buffer_unavailable``;
another instance's pub/sub reader subscribes again after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from testkit import T
from testkit.clients import negotiate
from testkit.faults import (
    GRACE_S,
    HEARTBEAT_MS,
    OUTAGE_DEADLINE_S,
    QUESTIONS,
    BlackholeProxy,
    InstanceFactory,
    InstanceProcess,
    RedisFactory,
    expected_answer,
    fault_env,
)
from testkit.journey import (
    TRANSPORTS,
    Journey,
    assert_whole_or_buffer_unavailable,
    assert_whole_reply,
    submit,
)
from testkit.processes import RedisProcess

OUTAGE_GRACE_S = 3.0
TERMINAL_DEADLINE_S = OUTAGE_DEADLINE_S + OUTAGE_GRACE_S
"""From the start of an outage to the terminal event of a client on the producing instance (units of T)."""
LONG_OUTAGE_S = TERMINAL_DEADLINE_S + 2
"""Longer than a client may wait: a reply that just waits for Redis to come back fails the test."""

Outage = Callable[[], Awaitable[None]]


@pytest.fixture
def rng() -> random.Random:
    """The transport of each test; the seed is printed, ``FAULT_SEED`` replays a run."""
    seed = int(os.environ.get("FAULT_SEED") or random.randrange(2**32))
    print(f"FAULT_SEED={seed}")
    return random.Random(seed)


async def sleep_s(seconds: float) -> None:
    await asyncio.sleep(seconds * T)


async def wait_until_ready(instance: InstanceProcess, timeout: float) -> None:
    """Until the instance's ``/readyz`` says its buffer is usable again; fails the test otherwise."""
    deadline = time.monotonic() + timeout * T
    last: Any = None
    async with httpx.AsyncClient(base_url=instance.base_url, timeout=1.0 * T) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                response = await http.get("/readyz")
                if response.status_code == 200:
                    return
                last = response.text
            await asyncio.sleep(0.1)
    raise AssertionError(f"{instance!r} not ready {timeout * T:.1f} s after Redis came back: {last}")


async def wait_for_redis_key(store: RedisProcess, key: str, field: str, timeout: float) -> bool:
    """Whether ``HGET key field`` answers within ``timeout`` (a producer writing back what Redis lost
    may take a moment after Redis returns); not an assertion: the resend after it is."""
    client = aioredis.Redis.from_url(store.url, socket_timeout=1.0 * T)
    deadline = time.monotonic() + timeout * T
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError):
                if await client.hget(key, field) is not None:
                    return True
            await asyncio.sleep(0.1)
        return False
    finally:
        await client.aclose()


async def a_reply_through_an_outage(
    producer: InstanceProcess, store: RedisProcess, transport: str, outage: Outage, rng: random.Random
) -> Journey:
    """A client sends on ``producer`` and reads a few events; then ``outage`` runs (in the background) while
    the client stays with the producer. Checks the reply's end, and, once Redis is back, that the same
    ``client_message_id`` still answers the first stream."""
    question = rng.choice(QUESTIONS)
    negotiated = await negotiate(producer.base_url)
    journey = Journey(negotiated, heartbeat_ms=HEARTBEAT_MS)
    submitted = await journey.send(producer, transport, question, cmid="m1")
    assert submitted.stream_id is not None, f"the send was refused before any outage: {submitted}"
    await journey.wait_for_events(3)
    outage_task = asyncio.create_task(outage())
    try:
        # The client sticks to the producing instance (reconnecting to it if its connection ends).
        # Within the deadline it gets the reply's end, or a retryable buffer_unavailable: never silence.
        await journey.follow_to_end(lambda: (producer, transport), TERMINAL_DEADLINE_S, until_unavailable=True)
    except AssertionError as exc:
        raise AssertionError(f"{transport} client on the producing instance during the outage: {exc}") from None
    finally:
        async with asyncio.timeout(30 * T):
            await outage_task

    # Recovery: the instance is ready again, and the send is still idempotent.
    await wait_until_ready(producer, GRACE_S + OUTAGE_DEADLINE_S)
    if journey.terminal is None:
        # Told buffer_unavailable during the outage: resuming now reaches the stored end of the reply
        # (written back by the producer), with nothing lost or doubled.
        journey.refusals.clear()
        await journey.follow_to_end(lambda: (producer, transport), GRACE_S + OUTAGE_DEADLINE_S)
    assert_whole_or_buffer_unavailable(journey.events, expected_answer(question))
    await wait_for_redis_key(store, f"bc:c:{negotiated['conversation_id']}:msgs", "m1", GRACE_S)
    # Like the bundled client, send again after a retryable refusal (the limits' Redis client may
    # still be waiting out its breaker for a moment after Redis returned).
    deadline = time.monotonic() + GRACE_S * T
    while True:
        again = await submit(producer, negotiated, transport, question, "m1")
        retryable = (again.error or {}).get("code") == "buffer_unavailable"
        if again.stream_id is not None or not retryable or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25 * T)
    assert again.stream_id == submitted.stream_id, (
        f"re-sending client_message_id m1 after Redis came back answered {again}, not the first stream "
        f"{submitted.stream_id}"
    )
    return journey


@pytest.mark.parametrize("persistent", [True, False], ids=["with-persistence", "without-persistence"])
async def test_a_reply_survives_redis_killed_and_restarted_mid_reply(
    instances: InstanceFactory, redis_servers: RedisFactory, rng: random.Random, persistent: bool
) -> None:
    store = redis_servers(persistent=persistent)
    producer = await instances(store.url, "i-a", **fault_env())

    async def kill_and_restart() -> None:
        store.kill()
        await sleep_s(1.0)
        await asyncio.to_thread(store.restart)

    await a_reply_through_an_outage(producer, store, rng.choice(TRANSPORTS), kill_and_restart, rng)


@pytest.mark.parametrize(
    "paused_s", [OUTAGE_DEADLINE_S / 2, LONG_OUTAGE_S], ids=["shorter-than-the-deadline", "past-the-deadline"]
)
async def test_a_reply_ends_within_the_deadline_when_redis_freezes(
    instances: InstanceFactory, redis_servers: RedisFactory, rng: random.Random, paused_s: float
) -> None:
    store = redis_servers()
    producer = await instances(store.url, "i-a", **fault_env())

    async def freeze() -> None:
        store.pause()
        try:
            await sleep_s(paused_s)
        finally:
            store.resume()

    await a_reply_through_an_outage(producer, store, rng.choice(TRANSPORTS), freeze, rng)


async def test_a_reply_ends_within_the_deadline_when_the_link_to_redis_is_blackholed(
    instances: InstanceFactory, redis_servers: RedisFactory, rng: random.Random
) -> None:
    """No FIN, no RST: only the instance's own timeouts can tell the link is dead."""
    store = redis_servers()
    async with BlackholeProxy(store.port) as link:
        producer = await instances(link.url, "i-a", **fault_env())

        async def blackhole() -> None:
            link.blackhole()
            try:
                await sleep_s(LONG_OUTAGE_S)
            finally:
                link.restore()

        await a_reply_through_an_outage(producer, store, rng.choice(TRANSPORTS), blackhole, rng)


@pytest.mark.parametrize(
    "down", ["killed", pytest.param("frozen", marks=pytest.mark.chaos)], ids=["redis-killed", "redis-frozen"]
)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_send_while_redis_is_down_is_refused_with_a_retryable_buffer_unavailable(
    instances: InstanceFactory, redis_servers: RedisFactory, transport: str, down: str
) -> None:
    store = redis_servers()
    instance = await instances(store.url, "i-a", **fault_env())
    negotiated = await negotiate(instance.base_url)  # tokens are signed, not stored: no Redis needed
    if down == "killed":
        store.kill()
    else:
        store.pause()
    started = time.monotonic()
    refused = await submit(instance, negotiated, transport, QUESTIONS[0], "m-down", timeout=TERMINAL_DEADLINE_S)
    took = time.monotonic() - started
    assert refused.stream_id is None, f"a send was accepted with Redis {down}: {refused}"
    assert refused.error is not None
    assert refused.error.get("code") == "buffer_unavailable", f"the send was refused with {refused}"
    if transport == "sse":
        assert refused.status == 503, refused
    else:
        assert refused.error.get("client_message_id") == "m-down", f"the refusal does not echo the id: {refused}"
        assert refused.error.get("retryable") in (None, True), refused
    assert took <= (OUTAGE_DEADLINE_S + GRACE_S) * T, f"the refusal took {took:.1f} s"


async def test_the_pubsub_reader_of_another_instance_subscribes_again_after_a_redis_restart(
    instances: InstanceFactory, redis_servers: RedisFactory, rng: random.Random
) -> None:
    """A client on B follows a reply produced on A; Redis restarts (with its data). B's reader must
    subscribe to the stream's channel again, and B's client must get the rest of the reply."""
    store = redis_servers(persistent=True)
    a, b = await asyncio.gather(instances(store.url, "i-a", **fault_env()), instances(store.url, "i-b", **fault_env()))
    question = rng.choice(QUESTIONS)
    negotiated = await negotiate(a.base_url)
    submitted = await submit(a, negotiated, "sse", question, "m1")  # produced on A, followed on B only
    assert submitted.stream_id is not None, submitted
    journey = Journey(negotiated, heartbeat_ms=HEARTBEAT_MS)
    journey.stream_id, journey.sent_at = submitted.stream_id, time.monotonic()
    transport = rng.choice(TRANSPORTS)
    journey.resume(b, transport)
    await journey.wait_for_events(2)
    channel = f"bc:ch:{submitted.stream_id}"
    admin = aioredis.Redis.from_url(store.url, socket_timeout=1.0 * T, decode_responses=True)

    async def subscribers() -> int:
        with contextlib.suppress(redis.RedisError, OSError):
            return int(dict(await admin.pubsub_numsub(channel)).get(channel, 0))
        return 0

    try:
        assert await subscribers() >= 1, "B is not subscribed to the stream's channel before the restart"
        await asyncio.to_thread(store.restart)
        deadline = time.monotonic() + GRACE_S * T
        while await subscribers() < 1:
            assert time.monotonic() < deadline, f"nobody subscribed to {channel} {GRACE_S * T:.1f} s after the restart"
            await asyncio.sleep(0.1)
    finally:
        await admin.aclose()
    try:
        await journey.follow_to_end(lambda: (b, transport), TERMINAL_DEADLINE_S)
    except AssertionError as exc:
        raise AssertionError(f"the follower on B after the Redis restart: {exc}") from None
    assert_whole_reply(journey.events, expected_answer(question))
