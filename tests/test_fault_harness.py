"""The fault harness itself (testkit.faults, RedisProcess's fault controls): each fault does what it says."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
import redis

from testkit import T
from testkit.clients import negotiate
from testkit.faults import (
    HEARTBEAT_MS,
    QUESTIONS,
    BlackholeProxy,
    InstanceFactory,
    RedisFactory,
    expected_answer,
    fault_env,
)
from testkit.journey import Journey, assert_whole_reply, decode_redis_stream


async def test_an_instance_process_answers_until_paused_and_again_once_resumed_and_dies_on_kill(
    instances: InstanceFactory,
) -> None:
    instance = await instances("memory://", "i-harness")
    async with httpx.AsyncClient(base_url=instance.base_url, timeout=0.5 * T) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok", "instance": "i-harness"}
        instance.pause()
        with pytest.raises(httpx.TimeoutException):
            await http.get("/healthz")
        instance.resume()
        assert (await http.get("/healthz")).status_code == 200
        instance.kill()
        assert not instance.alive
        with pytest.raises(httpx.ConnectError):
            await http.get("/healthz")
    assert any(m.startswith("ready: instance=i-harness") for m in instance.log_messages()), instance.tail()
    assert all(record.get("instance") == "i-harness" for record in instance.logs() if "status" in record)


@pytest.mark.parametrize("persistent", [False, True], ids=["without-persistence", "with-persistence"])
def test_a_redis_killed_and_restarted_on_its_port_keeps_its_data_only_with_persistence(
    redis_servers: RedisFactory, persistent: bool
) -> None:
    proc = redis_servers(persistent=persistent)
    client = redis.Redis.from_url(proc.url, socket_timeout=2 * T)
    client.set("k", "v")
    port = proc.port
    proc.kill()
    with pytest.raises(redis.ConnectionError):
        client.get("k")
    proc.restart()
    assert proc.port == port
    assert client.get("k") == (b"v" if persistent else None)
    client.close()


def test_a_paused_redis_answers_nothing_until_resumed(redis_servers: RedisFactory) -> None:
    proc = redis_servers()
    client = redis.Redis.from_url(proc.url, socket_timeout=0.5 * T)
    assert client.ping()
    proc.pause()
    with pytest.raises(redis.TimeoutError):
        client.ping()
    proc.resume()
    assert client.ping()
    client.close()


async def test_a_blackholed_proxy_passes_no_bytes_either_way_and_delivers_them_once_restored(
    redis_servers: RedisFactory,
) -> None:
    proc = redis_servers()
    admin = redis.Redis.from_url(proc.url)

    def pings_seen_by_redis() -> int:
        return int(admin.info("commandstats")["cmdstat_ping"]["calls"])

    async with BlackholeProxy(proc.port) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            writer.write(b"PING\r\n")
            async with asyncio.timeout(2 * T):
                assert await reader.readline() == b"+PONG\r\n"
            pings = pings_seen_by_redis()
            proxy.blackhole()
            writer.write(b"PING\r\n")
            await writer.drain()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.5 * T):
                    await reader.read(1)
            assert pings_seen_by_redis() == pings, "a PING went through the blackhole"
            # A new connection through the proxy is accepted and then hears nothing.
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=2 * T) as other:
                other.sendall(b"PING\r\n")
                other.settimeout(0.3 * T)
                with pytest.raises(TimeoutError):
                    other.recv(16)
            proxy.restore()
            async with asyncio.timeout(2 * T):
                assert await reader.readline() == b"+PONG\r\n"
        finally:
            writer.close()
            await writer.wait_closed()
    admin.close()


async def test_a_journey_that_drops_and_resumes_on_another_instance_gets_the_whole_reply_with_no_fault(
    instances: InstanceFactory, redis_servers: RedisFactory
) -> None:
    """The control for the fault tests: with nothing failing, the harness sees a whole, well-formed reply,
    and the log in Redis reads back as the same events."""
    store = redis_servers()
    a, b = await asyncio.gather(instances(store.url, "i-a", **fault_env()), instances(store.url, "i-b", **fault_env()))
    question = QUESTIONS[1]
    journey = Journey(await negotiate(a.base_url), heartbeat_ms=HEARTBEAT_MS, last_event_id=True)
    submitted = await journey.send(a, "websocket", question)
    assert submitted.stream_id is not None, submitted
    await journey.wait_for_events(3)
    await journey.drop()
    await journey.follow_to_end(lambda: (b, "sse"), 10)  # resumes with Last-Event-ID
    assert_whole_reply(journey.events, expected_answer(question))
    assert len(journey.connections) == 2, journey.describe()
    client = redis.Redis.from_url(store.url)
    stored = decode_redis_stream(client.xrange(f"bc:s:{submitted.stream_id}", "-", "+"))
    client.close()
    assert stored == journey.events
