"""One contract, every backend: the same tests run against memory:// and a real redis-server."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from streaming.buffer import StreamBuffer, make_buffer
from streaming.contract import AssistantTurn, BufferOptions, StreamOrigin, UserTurn, turn_record, turn_to_dict
from streaming.events import StoredEvent
from streaming.exceptions import LeaseLost, StreamExpired
from streaming.follow import follow
from streaming.log import StreamWriter
from testkit import T
from testkit.processes import RedisProcess


def buffer_options(subscription_maxsize: int = 256) -> BufferOptions:
    return BufferOptions(
        conversation_ttl_s=86_400,
        resume_window_s=600,
        subscription_maxsize=subscription_maxsize,
        lease_ttl_s=5.0,
        outage_deadline_s=10.0,
    )


@pytest.fixture(params=["memory", "redis"])
async def buffer(request: pytest.FixtureRequest) -> AsyncIterator[StreamBuffer]:
    if request.param == "memory":
        buf = make_buffer("memory://", buffer_options(subscription_maxsize=8))
    else:
        url: str = request.getfixturevalue("redis_url")
        buf = make_buffer(url, buffer_options(subscription_maxsize=8))
    await buf.start()
    yield buf
    await buf.close()


async def new_stream(buffer: StreamBuffer, stream_id: str = "s_1", ttl_s: int = 60) -> StreamWriter:
    await buffer.create_stream(stream_id, "c_1", ttl_s)
    writer = StreamWriter(stream_id, max_events=5_000, max_chars=40_000)
    await buffer.append(stream_id, [writer.start("c_1", "m_1")])
    return writer


async def collect(it: AsyncIterator[StoredEvent], timeout: float = 5.0) -> list[StoredEvent]:
    out = []
    async with asyncio.timeout(timeout * T):
        async for event in it:
            out.append(event)
    return out


async def test_appended_events_are_read_back_after_any_seq(buffer: StreamBuffer) -> None:
    writer = await new_stream(buffer)
    await buffer.append("s_1", [writer.delta("a"), writer.delta("b")])
    await buffer.append("s_1", [writer.done("stop")], expire_after_s=60)
    assert [e.seq for e in await buffer.read_after("s_1", 0)] == [1, 2, 3, 4]
    assert [e.seq for e in await buffer.read_after("s_1", 2)] == [3, 4]
    assert await buffer.read_after("s_1", 4) == []
    info = await buffer.stream_info("s_1")
    assert info is not None and info.terminal and info.conversation_id == "c_1"


async def test_an_unknown_stream_is_reported_expired_not_empty(buffer: StreamBuffer) -> None:
    with pytest.raises(StreamExpired):
        await buffer.read_after("s_nope", 0)
    assert await buffer.stream_info("s_nope") is None
    with pytest.raises(StreamExpired):
        await collect(follow(buffer, "s_nope", 0, idle_poll_s=0.2, unavailable_after_s=10))


async def test_a_follower_gets_the_replay_then_live_events_to_the_terminal(buffer: StreamBuffer) -> None:
    writer = await new_stream(buffer)
    await buffer.append("s_1", [writer.delta("early ")])
    it = follow(buffer, "s_1", 1, idle_poll_s=5, unavailable_after_s=10)
    replayed = await anext(it)  # subscribed and replayed; what follows is written after this point
    for word in ["live ", "words"]:
        await buffer.append("s_1", [writer.delta(word)])
    await buffer.append("s_1", [writer.done("stop")], expire_after_s=60)
    events = [replayed, *await collect(it)]
    assert [e.seq for e in events] == [2, 3, 4, 5]
    assert events[-1].payload()["text"] == "early live words"


async def test_many_followers_of_one_stream_each_get_every_event_once(buffer: StreamBuffer) -> None:
    writer = await new_stream(buffer)
    followers = [
        asyncio.create_task(collect(follow(buffer, "s_1", 0, idle_poll_s=5, unavailable_after_s=10))) for _ in range(50)
    ]
    for i in range(20):
        await buffer.append("s_1", [writer.delta(f"{i} ")])
    await buffer.append("s_1", [writer.done("stop")], expire_after_s=60)
    for events in await asyncio.gather(*followers):
        assert [e.seq for e in events] == list(range(1, 23))


async def test_a_follower_that_falls_behind_its_queue_rereads_the_log_and_loses_nothing(buffer: StreamBuffer) -> None:
    # The subscription holds 8 events; 100 arrive while the follower is not reading.
    writer = await new_stream(buffer)
    it = follow(buffer, "s_1", 0, idle_poll_s=5, unavailable_after_s=10)
    first = await anext(it)
    assert first.seq == 1
    for i in range(100):
        await buffer.append("s_1", [writer.delta(f"{i} ")])
    await buffer.append("s_1", [writer.done("stop")], expire_after_s=60)
    rest = await collect(it)
    assert [e.seq for e in rest] == list(range(2, 103))


async def test_a_follower_of_a_quiet_stream_still_sees_the_end_when_live_delivery_is_lost(buffer: StreamBuffer) -> None:
    writer = await new_stream(buffer)
    it = follow(buffer, "s_1", 0, idle_poll_s=0.1, unavailable_after_s=10)
    assert (await anext(it)).seq == 1
    # Write the terminal event behind the follower's back: no live message reaches it.
    event = writer.done("stop")
    fanout = buffer._fanout  # type: ignore[attr-defined]
    dropped = asyncio.Event()

    def drop(*args: object, **kwargs: object) -> None:
        dropped.set()

    saved = fanout.publish
    fanout.publish = drop
    try:
        await buffer.append("s_1", [event], expire_after_s=60)
        async with asyncio.timeout(2 * T):
            await dropped.wait()  # memory: at once; Redis: when the reader gets the live message
    finally:
        fanout.publish = saved
    rest = await collect(it, timeout=2)
    assert [e.seq for e in rest] == [2]


async def test_a_stream_expires_after_its_resume_window(buffer: StreamBuffer) -> None:
    writer = await new_stream(buffer)
    await buffer.append("s_1", [writer.done("stop")], expire_after_s=1)
    assert len(await buffer.read_after("s_1", 0)) == 2
    with pytest.raises(StreamExpired):
        async with asyncio.timeout(3 * T):
            while True:  # gone once its one-second window has passed
                await buffer.read_after("s_1", 0)
                await asyncio.sleep(0.05)


async def test_claiming_a_client_message_id_twice_returns_the_first_stream(buffer: StreamBuffer) -> None:
    winners = await asyncio.gather(*(buffer.claim_message("c_1", "m_1", f"s_{i}") for i in range(10)))
    assert len(set(winners)) == 1
    assert await buffer.claim_message("c_1", "m_1", "s_late") == winners[0]
    assert await buffer.claim_message("c_2", "m_1", "s_other") == "s_other"


async def test_creating_a_stream_can_claim_its_client_message_id_in_the_same_step(buffer: StreamBuffer) -> None:
    assert await buffer.create_stream("s_1", "c_1", 60) == "s_1"  # no id to claim
    assert await buffer.create_stream("s_2", "c_1", 60, "m_1") == "s_2"
    assert await buffer.create_stream("s_3", "c_1", 60, "m_1") == "s_2"  # the first stream keeps the id
    assert await buffer.claim_message("c_1", "m_1", "s_late") == "s_2"
    info = await buffer.stream_info("s_2")
    assert info is not None and info.conversation_id == "c_1" and not info.terminal
    writer = StreamWriter("s_2", max_events=5_000, max_chars=40_000)
    await buffer.append("s_2", [writer.start("c_1", "m_1"), writer.done("stop")], expire_after_s=60)
    assert [e.seq for e in await buffer.read_after("s_2", 0)] == [1, 2]


async def test_history_keeps_turns_in_order_with_final_reply_text(buffer: StreamBuffer) -> None:
    await buffer.add_turn("c_1", UserTurn(text="hi", client_message_id="m_1"))
    await buffer.add_turn("c_1", AssistantTurn(stream_id="s_1"))
    assert (await buffer.history("c_1"))[1] == AssistantTurn(stream_id="s_1")
    await buffer.finish_reply("c_1", "s_1", "hello!", "done")
    assert [turn_to_dict(t) for t in await buffer.history("c_1")] == [
        {"role": "user", "text": "hi", "client_message_id": "m_1"},
        {"role": "assistant", "stream_id": "s_1", "text": "hello!", "status": "done"},
    ]
    assert await buffer.history("c_unknown") == []


async def test_each_turn_keeps_the_token_count_it_was_written_with_and_the_wire_shape_leaves_it_out(
    buffer: StreamBuffer,
) -> None:
    # Several turns in one call (one write), in order.
    await buffer.add_turn(
        "c_1", UserTurn(text="hi there", client_message_id="m_1", tokens=2), AssistantTurn(stream_id="s_1")
    )
    await buffer.add_turn("c_1")  # nothing to write
    await buffer.add_turn("c_1", UserTurn(text="an older turn, stored without a count", client_message_id="m_2"))
    await buffer.finish_reply("c_1", "s_1", "hello!", "done", tokens=3)
    turns = await buffer.history("c_1")
    assert [t.tokens for t in turns] == [2, 3, None]
    assert [turn_record(t).get("tokens") for t in turns] == [2, 3, None]
    assert all("tokens" not in turn_to_dict(t) for t in turns), "history on the wire is unchanged"


async def test_a_cancel_request_reaches_the_registered_handler(buffer: StreamBuffer) -> None:
    received: asyncio.Queue[str] = asyncio.Queue(maxsize=4)

    async def handler(stream_id: str) -> None:
        received.put_nowait(stream_id)

    buffer.on_cancel(handler)
    await buffer.request_cancel("s_9")
    async with asyncio.timeout(2 * T):
        assert await received.get() == "s_9"


async def test_a_redis_that_lost_a_live_stream_gets_it_back_whole_from_its_producer(redis_url: str) -> None:
    """Redis restarted without persistence mid-reply: the producer writes back the stream (origin,
    every event) and the conversation's client_message_id map, so readers never see a partial log."""
    buf = make_buffer(redis_url, buffer_options())
    await buf.start()
    try:
        await buf.create_stream("s_1", "c_1", 60)
        writer = StreamWriter("s_1", max_events=5_000, max_chars=40_000)
        origin = StreamOrigin("c_1", "m_1", (UserTurn("hi", "m_1"), AssistantTurn("s_1")), job="{}")
        await buf.start_production("s_1", origin, [writer.start("c_1", "m_1")])
        await buf.append("s_1", [writer.delta("a")])
        raw = aioredis.from_url(redis_url)
        await raw.flushdb()
        await raw.aclose()
        await buf.append("s_1", [writer.delta("b")])
        assert [e.seq for e in await buf.read_after("s_1", 0)] == [1, 2, 3]
        assert await buf.claim_message("c_1", "m_1", "s_other") == "s_1"
        assert [turn_to_dict(t)["role"] for t in await buf.history("c_1")] == ["user", "assistant"]
    finally:
        await buf.close()


async def _started(buf: StreamBuffer, stream_id: str = "s_1") -> StreamWriter:
    await buf.create_stream(stream_id, "c_1", 60)
    writer = StreamWriter(stream_id, max_events=5_000, max_chars=40_000)
    origin = StreamOrigin("c_1", "m_1", (UserTurn("hi", "m_1"), AssistantTurn(stream_id)), job="{}")
    await buf.start_production(stream_id, origin, [writer.start("c_1", "m_1")])
    return writer


async def _logged_seqs(raw: aioredis.Redis, stream_id: str = "s_1") -> list[int]:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await raw.xrange(f"bc:s:{stream_id}")  # type: ignore[assignment]
    return [int(eid.split(b"-")[0]) for eid, _ in entries]


async def test_appends_after_redis_forgot_its_scripts_are_written_once_each(redis_url: str) -> None:
    """The writer calls the append script by its sha; a Redis that lost its script cache (restart,
    SCRIPT FLUSH) answers NOSCRIPT, and the events are written after the script is loaded again."""
    buf = make_buffer(redis_url, buffer_options())
    await buf.start()
    raw = aioredis.from_url(redis_url)
    try:
        writer = await _started(buf)
        await buf.append("s_1", [writer.delta("a")])
        await raw.script_flush()
        await buf.append("s_1", [writer.delta("b"), writer.delta("c")])
        assert await _logged_seqs(raw) == [1, 2, 3, 4]
    finally:
        await raw.aclose()
        await buf.close()


async def test_a_log_without_its_last_seq_in_the_meta_hash_continues_after_its_last_entry(redis_url: str) -> None:
    """A stream written by an instance that did not keep the last seq in the meta hash (a rolling
    deploy): the append reads the log's last entry instead, also when the kept seq is behind it."""
    buf = make_buffer(redis_url, buffer_options())
    await buf.start()
    raw = aioredis.from_url(redis_url)
    try:
        writer = await _started(buf)
        await buf.append("s_1", [writer.delta("a")])
        await raw.hdel("bc:s:s_1:m", "n")
        await buf.append("s_1", [writer.delta("b")])
        assert await _logged_seqs(raw) == [1, 2, 3]
        assert await raw.hget("bc:s:s_1:m", "n") == b"3"
        await raw.hset("bc:s:s_1:m", "n", "1")  # behind the log: another writer did not keep it
        await buf.append("s_1", [writer.delta("c")])
        assert await _logged_seqs(raw) == [1, 2, 3, 4]
    finally:
        await raw.aclose()
        await buf.close()


async def test_a_log_redis_lost_while_its_meta_hash_remained_is_written_again_from_its_first_event(
    redis_url: str,
) -> None:
    buf = make_buffer(redis_url, buffer_options())
    await buf.start()
    raw = aioredis.from_url(redis_url)
    try:
        writer = await _started(buf)
        await buf.append("s_1", [writer.delta("a")])
        await raw.delete("bc:s:s_1")  # e.g. evicted under memory pressure
        await buf.append("s_1", [writer.delta("b")])
        assert await _logged_seqs(raw) == [1, 2, 3]
        assert await raw.ttl("bc:s:s_1") > 0
    finally:
        await raw.aclose()
        await buf.close()


async def test_a_started_stream_holds_a_lease_and_is_listed_live_until_its_terminal_event(redis_url: str) -> None:
    """The first append takes the lease (so a sweeper can find the stream if this instance dies);
    the terminal event gives it up."""
    buf = make_buffer(redis_url, buffer_options())
    await buf.start()
    raw = aioredis.from_url(redis_url)
    try:
        writer = await _started(buf)
        await buf.append("s_1", [writer.delta("a"), writer.delta("b")])
        assert await raw.get("bc:s:s_1:l") == buf.owner.encode()  # type: ignore[attr-defined]
        assert await raw.zscore("bc:live", "s_1") is not None
        await buf.append("s_1", [writer.done("stop")], expire_after_s=60)
        assert await raw.exists("bc:s:s_1:l") == 0
        assert await raw.zscore("bc:live", "s_1") is None
    finally:
        await raw.aclose()
        await buf.close()


async def test_a_reader_of_a_stream_redis_lost_with_no_producer_is_told_it_expired(redis_url: str) -> None:
    buf = make_buffer(redis_url, buffer_options())
    await buf.start()
    try:
        writer = await new_stream(buf)
        await buf.append("s_1", [writer.delta("a")])
        raw = aioredis.from_url(redis_url)
        await raw.flushdb()
        await raw.aclose()
        with pytest.raises(StreamExpired):
            await buf.read_after("s_1", 1)
    finally:
        await buf.close()


async def test_a_thousand_followers_share_one_redis_pubsub_connection(redis_url: str) -> None:
    # The streams are produced by another instance: followers of a stream produced here need no channel.
    producer = make_buffer(redis_url, buffer_options())
    await producer.start()
    buf = make_buffer(redis_url, buffer_options())
    await buf.start()
    raw = aioredis.from_url(redis_url)
    try:
        for i in range(10):
            await new_stream(producer, f"s_{i}")
        followers = [
            asyncio.create_task(
                collect(follow(buf, f"s_{i % 10}", 0, idle_poll_s=30, unavailable_after_s=10), timeout=20)
            )
            for i in range(1000)
        ]
        async with asyncio.timeout(10 * T):
            while len(buf._fanout) < 1000:  # type: ignore[attr-defined]
                await asyncio.sleep(0.01)
        clients = await raw.client_list()
        subs = sorted(int(c.get("sub", 0)) for c in clients if int(c.get("sub", 0)) > 0)
        assert subs == [1, 11]  # the producer: the cancel channel; the followers' instance: ten streams + cancel
        assert len(clients) <= 2 * 66  # per instance: the bounded pool (64) + the pub/sub connection; this client
        for i in range(10):
            await producer.append(
                f"s_{i}",
                [StreamWriter(f"s_{i}", max_events=5_000, max_chars=40_000, seq=1, _started=True).done("stop")],
                expire_after_s=60,
            )
        results = await asyncio.gather(*followers)
        assert all([e.seq for e in r] == [1, 2] for r in results)
    finally:
        await raw.aclose()
        await buf.close()
        await producer.close()


async def test_followers_of_a_stream_produced_here_get_every_event_without_its_channel(redis_url: str) -> None:
    """The producing instance does not subscribe to its own streams' channels (Redis would echo every
    append back to it): its followers are fed from memory once Redis has the events."""
    buf = make_buffer(redis_url, buffer_options())
    await buf.start()
    raw = aioredis.from_url(redis_url)
    try:
        writer = await new_stream(buf)
        followers = [
            asyncio.create_task(collect(follow(buf, "s_1", 0, idle_poll_s=30, unavailable_after_s=10), timeout=10))
            for _ in range(3)
        ]
        async with asyncio.timeout(5 * T):
            while len(buf._fanout) < 3:  # type: ignore[attr-defined]
                await asyncio.sleep(0.01)
        assert await raw.pubsub_numsub("bc:ch:s_1") == [(b"bc:ch:s_1", 0)]
        words = [f"w{i} " for i in range(20)]
        for word in words:
            await buf.append("s_1", [writer.delta(word)])
        await buf.append("s_1", [writer.done("stop")], expire_after_s=60)
        for events in await asyncio.gather(*followers):
            assert [e.seq for e in events] == list(range(1, 23))
            assert "".join(e.payload().get("text", "") for e in events if e.type == "delta") == "".join(words)
        # Every event is in Redis too (followers were fed only after it was durable).
        assert len(await raw.xrange("bc:s:s_1")) == 22
    finally:
        await raw.aclose()
        await buf.close()


async def test_a_follower_keeps_following_live_when_another_instance_takes_its_stream_over(redis_url: str) -> None:
    """A follows the stream it produces (from memory, no channel); B takes it over: A's follower
    re-reads the log, subscribes, and gets B's events live up to the terminal."""
    a = make_buffer(redis_url, buffer_options())
    b = make_buffer(redis_url, buffer_options())
    await a.start()
    await b.start()
    raw = aioredis.from_url(redis_url)
    try:
        writer = await _started(a)
        await a.append("s_1", [writer.delta("from A ")])
        it = follow(a, "s_1", 0, idle_poll_s=30, unavailable_after_s=10)
        assert [(await anext(it)).seq for _ in range(2)] == [1, 2]
        assert await raw.pubsub_numsub("bc:ch:s_1") == [(b"bc:ch:s_1", 0)]
        await raw.delete("bc:s:s_1:l")  # A's lease ran out (it was paused, say)
        orphan = await b.take_over("s_1")
        assert orphan is not None
        with pytest.raises(LeaseLost):  # A learns it lost the stream at its next write
            await a.append("s_1", [writer.delta("zombie ")])
        async with asyncio.timeout(5 * T):
            while await raw.pubsub_numsub("bc:ch:s_1") != [(b"bc:ch:s_1", 1)]:
                await asyncio.sleep(0.01)
        b_writer = StreamWriter("s_1", max_events=5_000, max_chars=40_000, seq=orphan.events[-1].seq, _started=True)
        await b.append("s_1", [b_writer.delta("from B")])
        await b.append("s_1", [b_writer.done("stop")], expire_after_s=60)
        rest = await collect(it, timeout=5)
        assert [e.seq for e in rest] == list(range(3, b_writer.seq + 1))
        assert rest[-2].payload()["text"] == "from B" and rest[-1].type == "done"
    finally:
        await raw.aclose()
        await a.close()
        await b.close()


@pytest.fixture
async def own_redis() -> AsyncIterator[RedisProcess]:
    proc = RedisProcess()
    proc.start()
    yield proc
    proc.stop()


async def test_followers_recover_after_the_redis_reader_loses_its_connection(own_redis: RedisProcess) -> None:
    buf = make_buffer(own_redis.url, buffer_options())
    await buf.start()
    raw = aioredis.from_url(own_redis.url)
    try:
        writer = await new_stream(buf)
        it = follow(buf, "s_1", 0, idle_poll_s=0.3, unavailable_after_s=10)
        assert (await anext(it)).seq == 1
        await raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        for word in ["after ", "reconnect"]:
            await buf.append("s_1", [writer.delta(word)])
        await buf.append("s_1", [writer.done("stop")], expire_after_s=60)
        rest = await collect(it, timeout=5)
        assert [e.seq for e in rest] == [2, 3, 4]
    finally:
        await raw.aclose()
        await buf.close()


async def test_a_stream_whose_writer_died_is_ended_by_its_follower_with_a_retryable_error(buffer: StreamBuffer) -> None:
    """The instance running the job crashed (no graceful shutdown): followers must not wait for ever."""
    writer = await new_stream(buffer)
    await buffer.append("s_1", [writer.delta("half a repl")])
    events = await collect(
        follow(buffer, "s_1", 0, idle_poll_s=0.1, unavailable_after_s=10, lost_after_s=0.2), timeout=5
    )
    assert [e.type for e in events] == ["start", "delta", "error"]
    assert [e.seq for e in events] == [1, 2, 3]
    last = events[-1].payload()
    assert last["code"] == "generation_lost" and last["retryable"] is True and last["seq"] == 3
    # Ending it again is a no-op: one terminal event at most.
    await buffer.end_abandoned("s_1", "generation_lost", "again")
    assert len(await buffer.read_after("s_1", 0)) == 3
    info = await buffer.stream_info("s_1")
    assert info is not None and info.terminal


async def test_a_producer_whose_redis_stops_answering_feeds_its_followers_from_memory_before_the_write_fails(
    own_redis: RedisProcess,
) -> None:
    """A blackholed link answers nothing: a write fails only after two socket timeouts (~3 s), as long
    as a short outage deadline. The outage starts for local followers once a write has gone unanswered
    for STALL_S, so they keep getting words (bounded) instead of nothing before their refusal."""
    from streaming.redis_buffer import SOCKET_TIMEOUT_S, STALL_S
    from testkit.faults import BlackholeProxy

    options = dataclasses.replace(buffer_options(), outage_deadline_s=3.0 * T)
    async with BlackholeProxy(own_redis.port) as link:
        buf = make_buffer(link.url, options)
        await buf.start()
        try:
            writer = await _started(buf)
            it = follow(buf, "s_1", 0, idle_poll_s=0.2, unavailable_after_s=3.0 * T)
            assert (await anext(it)).seq == 1
            link.blackhole()
            appended = asyncio.create_task(buf.append("s_1", [writer.delta("still here")]))
            # Before the write could fail (two socket timeouts): the stall after STALL_S delivered it.
            assert STALL_S < SOCKET_TIMEOUT_S
            event = await asyncio.wait_for(anext(it), SOCKET_TIMEOUT_S * T)
            assert (event.seq, event.payload()["text"]) == (2, "still here")
            await asyncio.wait_for(appended, 1.0 * T)  # the job goes on too, from memory
            info = await buf.stream_info("s_1")
            assert info is not None and not info.terminal
        finally:
            link.restore()
            await buf.close()
