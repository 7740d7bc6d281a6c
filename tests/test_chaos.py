"""The chaos mix (``make chaos``): randomized rounds in which clients drop and resume anywhere over
either transport while producers are ``kill -9``ed and Redis (with its append-only file) is killed
and restarted, all at once. Three instances share one Redis; every round runs a few replies side by
side and injects one random server-side fault into them.

It prints the figures docs/streaming.md quotes: trials, words lost, events or words duplicated,
replies that hung, time to the terminal event (p50 / p99). ``CHAOS_TRIALS`` sets the number of
replies, ``FAULT_SEED`` replays a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random

import pytest

from testkit import T
from testkit.clients import negotiate
from testkit.faults import (
    GRACE_S,
    HEARTBEAT_MS,
    LEASE_TTL_S,
    OUTAGE_DEADLINE_S,
    QUESTIONS,
    InstanceFactory,
    InstanceProcess,
    RedisFactory,
    expected_answer,
    fault_env,
)
from testkit.journey import TRANSPORTS, Figures, Journey, assert_whole_reply, random_choice
from testkit.processes import RedisProcess

INSTANCES = 3
REPLIES_PER_ROUND = 3
FAULTS = ("none", "producer killed", "redis restarted", "producer killed + redis restarted")
TRIAL_DEADLINE_S = LEASE_TTL_S + OUTAGE_DEADLINE_S + GRACE_S + 4
"""From a client's (last) resume to its terminal event, whatever the round did (units of T)."""


class Cluster:
    def __init__(self, factory: InstanceFactory, store: RedisProcess) -> None:
        self.factory = factory
        self.store = store
        self.members: list[InstanceProcess] = []
        self.started = 0

    def live(self) -> list[InstanceProcess]:
        return [i for i in self.members if i.alive and not i.paused]

    async def fill(self) -> None:
        """Replace the dead: always :data:`INSTANCES` running."""
        missing = INSTANCES - len(self.live())
        names = [f"i-{self.started + k}" for k in range(missing)]
        self.started += missing
        self.members = self.live() + list(
            await asyncio.gather(*(self.factory(self.store.url, name, **fault_env()) for name in names))
        )


async def one_reply(
    label: str, cluster: Cluster, rng: random.Random, figures: Figures, producers: list[InstanceProcess]
) -> None:
    """A client sends somewhere, maybe drops and resumes anywhere, and follows to the end; recorded in
    ``figures`` (never raises: one bad trial must not hide the others' figures)."""
    question = rng.choice(QUESTIONS)
    origin = rng.choice(cluster.live())
    journey = Journey(await negotiate(origin.base_url), heartbeat_ms=HEARTBEAT_MS, last_event_id=rng.random() < 0.5)
    submitted = await journey.send(origin, rng.choice(TRANSPORTS), question, cmid=label)
    producers.append(origin)
    if submitted.stream_id is None:
        figures.failures.append(f"{label}: send refused: {submitted}")
        return
    drops = []
    if rng.random() < 0.5:
        with contextlib.suppress(AssertionError):  # its instance may be killed first: resume all the same
            await journey.wait_for_events(rng.randint(1, 8), timeout=5.0)
        await journey.drop()
        drops.append("client drop")
        await asyncio.sleep(rng.uniform(0, 1.0) * T)
    hung = False
    try:
        await journey.follow_to_end(random_choice(cluster.live, rng), TRIAL_DEADLINE_S)
    except AssertionError as exc:
        hung = True
        figures.failures.append(f"{label}: {exc}")
    figures.record(journey, expected_answer(question), drops, hung)
    if not hung:
        try:
            assert_whole_reply(journey.events, expected_answer(question))
        except AssertionError as exc:
            figures.failures.append(f"{label}: {exc}; {journey.describe()}")


async def inject(
    fault: str, cluster: Cluster, rng: random.Random, producers: list[InstanceProcess], sent: asyncio.Event
) -> None:
    await sent.wait()
    await asyncio.sleep(rng.uniform(0.2, 1.5) * T)
    if "producer killed" in fault:
        victims = [p for p in producers if p.alive]
        if victims:
            rng.choice(victims).kill()
    if "redis restarted" in fault:
        cluster.store.kill()
        await asyncio.sleep(rng.uniform(0.2, 1.5) * T)
        await asyncio.to_thread(cluster.store.restart)


async def when_all_sent(
    replies: list[asyncio.Task[None]], producers: list[InstanceProcess], sent: asyncio.Event
) -> None:
    """Set ``sent`` once every reply of the round was sent (or gave up): faults strike mid-reply."""
    while len(producers) < len(replies) and not all(r.done() for r in replies):
        await asyncio.sleep(0.01)
    sent.set()


@pytest.fixture
def rng() -> random.Random:
    seed = int(os.environ.get("FAULT_SEED") or random.randrange(2**32))
    print(f"FAULT_SEED={seed}")
    return random.Random(seed)


@pytest.mark.chaos
@pytest.mark.timeout(1200)
async def test_no_reply_is_lost_duplicated_or_hung_under_a_random_mix_of_client_and_server_faults(
    instances: InstanceFactory, redis_servers: RedisFactory, rng: random.Random
) -> None:
    cluster = Cluster(instances, redis_servers(persistent=True))
    await cluster.fill()
    figures = Figures()
    trials = int(os.environ.get("CHAOS_TRIALS", "24"))
    for round_no in range((trials + REPLIES_PER_ROUND - 1) // REPLIES_PER_ROUND):
        fault = rng.choice(FAULTS)
        figures.faults[fault] += 1
        producers: list[InstanceProcess] = []
        sent = asyncio.Event()
        replies = [
            asyncio.create_task(one_reply(f"r{round_no}-{k}", cluster, rng, figures, producers))
            for k in range(REPLIES_PER_ROUND)
        ]

        async with asyncio.timeout((TRIAL_DEADLINE_S + 30) * T):
            await asyncio.gather(
                when_all_sent(replies, producers, sent), inject(fault, cluster, rng, producers, sent), *replies
            )
        await cluster.fill()
    print(f"chaos mix: {figures.summary()}")
    for failure in figures.failures:
        print(f"  {failure}")
    assert (figures.lost_words, figures.duplicated, figures.hung) == (0, 0, 0), figures.summary()
    assert not figures.errors, (
        f"replies ended in errors although every outage was shorter than the deadline: {figures.summary()}"
    )
    assert not figures.failures, "\n".join(figures.failures)
