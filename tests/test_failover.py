"""Producer failover (issue 9 §1), with real processes: two or more ``python -m api`` instances sharing a
real ``redis-server``, the offline demo provider (deterministic: the whole reply is known in advance).

The producing instance is ``kill -9``ed, or frozen (``SIGSTOP``) past its lease and woken up again.
Clients resume on another instance from their last ``seq``; every reply must end within the lease plus
a few seconds, with no gap, no duplicate, and the text the provider streams, whether the new producer
continues the text or withdraws it with a ``retract`` (reason ``failover``).
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import pytest
import redis

from testkit import T
from testkit.clients import assert_well_formed, joined_text, negotiate
from testkit.faults import (
    GRACE_S,
    HEARTBEAT_MS,
    LEASE_TTL_S,
    QUESTIONS,
    InstanceFactory,
    InstanceProcess,
    RedisFactory,
    expected_answer,
    fault_env,
    wait_for_log,
)
from testkit.journey import TRANSPORTS, Journey, assert_whole_reply, decode_redis_stream

FAILOVER_DEADLINE_S = LEASE_TTL_S + GRACE_S
"""From the producer's death to the client's terminal event (units of T)."""


@pytest.fixture
def rng() -> random.Random:
    """Random kill points and transports; the seed is printed, ``FAULT_SEED`` replays a run."""
    seed = int(os.environ.get("FAULT_SEED") or random.randrange(2**32))
    print(f"FAULT_SEED={seed}")
    return random.Random(seed)


async def kill_the_producer_mid_reply(
    producer: InstanceProcess, survivor: InstanceProcess, rng: random.Random, label: str
) -> Journey:
    """A client sends on ``producer`` over a random transport, reads a few events, ``producer`` is killed
    at a random point, and the client resumes on ``survivor`` (random transport) from its last seq."""
    question = rng.choice(QUESTIONS)
    transport = rng.choice(TRANSPORTS)
    journey = Journey(await negotiate(producer.base_url), heartbeat_ms=HEARTBEAT_MS, last_event_id=rng.random() < 0.5)
    submitted = await journey.send(producer, transport, question)
    assert submitted.stream_id is not None, f"{label}: the send was refused: {submitted}"
    await journey.wait_for_events(rng.randint(1, 6))
    await asyncio.sleep(rng.uniform(0, 1.2) * T)
    producer.kill()
    killed_at = time.monotonic()
    await journey.wait_until_reading_ends(1.0)  # what was already on its way still arrives
    await journey.drop()
    remaining = FAILOVER_DEADLINE_S - (time.monotonic() - killed_at) / T
    try:
        await journey.follow_to_end(lambda: (survivor, rng.choice(TRANSPORTS)), remaining)
    except AssertionError as exc:
        raise AssertionError(f"{label} ({transport}): after the producer's kill -9, {exc}") from None
    assert_whole_reply(journey.events, expected_answer(question))
    return journey


async def test_a_reply_whose_producer_is_killed_ends_whole_on_another_instance_within_the_lease(
    instances: InstanceFactory, redis_servers: RedisFactory, rng: random.Random
) -> None:
    """The fast version (``make test``): a few kills at random points, each producer replaced after."""
    store = redis_servers()
    a, b = await asyncio.gather(instances(store.url, "i-a", **fault_env()), instances(store.url, "i-b", **fault_env()))
    for trial in range(3):
        await kill_the_producer_mid_reply(a, b, rng, f"trial {trial}")
        a, b = b, await instances(store.url, f"i-r{trial}", **fault_env())


@pytest.mark.chaos
@pytest.mark.timeout(900)
async def test_replies_survive_twenty_kills_of_their_producer_at_random_points(
    instances: InstanceFactory, redis_servers: RedisFactory, rng: random.Random
) -> None:
    store = redis_servers(persistent=True)
    a, b = await asyncio.gather(instances(store.url, "i-a", **fault_env()), instances(store.url, "i-b", **fault_env()))
    trials = int(os.environ.get("CHAOS_TRIALS", "20"))
    times = []
    for trial in range(trials):
        # The replacement starts while the failover runs: one more instance that could take over.
        replacement = asyncio.create_task(instances(store.url, f"i-r{trial}", **fault_env()))
        try:
            journey = await kill_the_producer_mid_reply(a, b, rng, f"trial {trial}")
        finally:
            started = await replacement  # killed by the fixture if the trial failed
        assert journey.seconds_to_terminal is not None
        times.append(journey.seconds_to_terminal)
        a, b = b, started
    times.sort()
    print(f"{trials} kills: time from send to done p50 {times[len(times) // 2]:.2f} s, max {times[-1]:.2f} s")


async def test_a_frozen_producer_that_wakes_after_its_lease_cannot_append_to_the_reply_taken_over(
    instances: InstanceFactory, redis_servers: RedisFactory, rng: random.Random
) -> None:
    """The zombie: A is frozen (``SIGSTOP``) past its lease, B takes the reply over and finishes it,
    then A wakes up (``SIGCONT``) believing it still produces. Its late appends must be refused: the
    log in Redis has one writer's events only, and A says so in its log."""
    store = redis_servers()
    a, b = await asyncio.gather(instances(store.url, "i-a", **fault_env()), instances(store.url, "i-b", **fault_env()))
    question = rng.choice(QUESTIONS)
    journey = Journey(await negotiate(a.base_url), heartbeat_ms=HEARTBEAT_MS)
    submitted = await journey.send(a, rng.choice(TRANSPORTS), question)
    assert submitted.stream_id is not None, submitted
    await journey.wait_for_events(rng.randint(2, 5))
    a.pause()
    paused_at = time.monotonic()
    await journey.drop()
    try:
        await journey.follow_to_end(lambda: (b, rng.choice(TRANSPORTS)), FAILOVER_DEADLINE_S)
    except AssertionError as exc:
        raise AssertionError(f"with the producer frozen, {exc}") from None
    assert_whole_reply(journey.events, expected_answer(question))
    # Keep A frozen well past its lease, then wake it up mid-reply (as far as it knows).
    await asyncio.sleep(max(0.0, paused_at + (LEASE_TTL_S + 3) * T - time.monotonic()))
    a.resume()
    lease_lost = await wait_for_log(a, "lease lost", GRACE_S)

    client = redis.Redis.from_url(store.url, socket_timeout=5 * T)
    try:
        stored = decode_redis_stream(client.xrange(f"bc:s:{submitted.stream_id}", "-", "+"))
    finally:
        client.close()
    assert_well_formed(stored)  # seqs 1..N once each, one start, one terminal, nothing after it
    assert stored[-1] == journey.events[-1], "the log's terminal event is not the one the client got"
    assert joined_text(stored) == stored[-1]["text"] == expected_answer(question)
    assert lease_lost is not None, f"A did not log 'lease lost' after waking up:\n{a.tail()}"


async def test_a_producer_cut_off_from_redis_keeps_its_clients_going_and_a_takeover_never_corrupts_their_text(
    instances: InstanceFactory, redis_servers: RedisFactory, rng: random.Random
) -> None:
    """The partition case of docs/streaming.md's invariants: A loses its link to Redis (blackholed, no
    FIN), so its own client keeps receiving events Redis never gets, while B takes the stream over
    (A's lease expires) and writes its own seqs. A's client, told buffer_unavailable, resumes on B
    from a seq only it has seen, and must still end with exactly the provider's text."""
    from testkit.faults import BlackholeProxy

    store = redis_servers()
    async with BlackholeProxy(store.port) as link:
        a, b = await asyncio.gather(
            instances(link.url, "i-a", **fault_env()),
            instances(store.url, "i-b", **fault_env()),
        )
        question = rng.choice(QUESTIONS)
        journey = Journey(await negotiate(a.base_url), heartbeat_ms=HEARTBEAT_MS)
        submitted = await journey.send(a, "websocket", question)
        assert submitted.stream_id is not None, submitted
        await journey.wait_for_events(3)
        link.blackhole()
        before = len(journey.events)
        # A's client: more words from memory, then (past A's outage deadline) a retryable refusal.
        await journey.follow_to_end(lambda: (a, "websocket"), FAILOVER_DEADLINE_S + 5, until_unavailable=True)
        assert len(journey.events) > before, "A's own client got nothing while Redis was out of reach"
        seen_on_a = journey.events[-1]["seq"]
        journey.refusals.clear()
        await journey.follow_to_end(lambda: (b, rng.choice(TRANSPORTS)), FAILOVER_DEADLINE_S + 5)
        assert_whole_reply(journey.events, expected_answer(question))
        took_over = await wait_for_log(b, "took over stream", 1.0)
        assert took_over is not None, "B never took the stream over"
        durable = int(took_over.rsplit(" at seq ", 1)[1].split()[0])
        assert seen_on_a > durable, (
            f"the case under test did not happen: A showed up to {seen_on_a}, Redis had {durable}"
        )
        link.restore()


async def test_a_reply_cancelled_while_its_producer_is_dead_ends_cancelled_when_another_instance_takes_it_over(
    instances: InstanceFactory, redis_servers: RedisFactory, rng: random.Random
) -> None:
    """Cancel holds across a failover: the cancel is kept on the stream, not only sent to whoever ran it."""
    import httpx

    store = redis_servers()
    a, b = await asyncio.gather(instances(store.url, "i-a", **fault_env()), instances(store.url, "i-b", **fault_env()))
    negotiated = await negotiate(a.base_url)
    journey = Journey(negotiated, heartbeat_ms=HEARTBEAT_MS)
    submitted = await journey.send(a, "websocket", rng.choice(QUESTIONS))
    assert submitted.stream_id is not None, submitted
    await journey.wait_for_events(3)
    a.kill()
    await journey.drop()
    async with httpx.AsyncClient(base_url=b.base_url, timeout=5 * T) as http:
        response = await http.post(
            f"/v1/streams/{submitted.stream_id}/cancel", headers={"Authorization": f"Bearer {negotiated['token']}"}
        )
    assert response.status_code == 202, response.text
    done = await journey.follow_to_end(lambda: (b, rng.choice(TRANSPORTS)), FAILOVER_DEADLINE_S)
    assert_well_formed(journey.events)
    assert (done["type"], done["finish_reason"]) == ("done", "cancelled")
    assert done["text"] == joined_text(journey.events)
