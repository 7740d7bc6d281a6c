"""Two instances behind a real nginx without sticky sessions, sharing a real Redis."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
import websockets

from deploy.cluster import NginxProcess, nginx_binary
from persona.demo import compose_answer
from testkit import T
from testkit.clients import WsClient, assert_well_formed, joined_text, negotiate, post_message, read_sse
from testkit.processes import free_port
from testkit.server import RunningServer, ServerFactory

QUESTION = "How do I brew a pour-over, and how long does shipping take?"


def _nginx_available() -> bool:
    try:
        nginx_binary()
    except RuntimeError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _nginx_available() and not os.environ.get("CI"),
    reason="nginx is not installed here (CI installs it: .ci/run)",
)


@pytest.fixture
async def cluster(servers: ServerFactory, redis_url: str) -> AsyncIterator[tuple[NginxProcess, list[RunningServer]]]:
    instances = [
        await servers(buffer_url=redis_url, offline_token_delay_ms=30, shutdown_grace_s=10, instance_id=f"i-{name}")
        for name in "ab"
    ]
    nginx = NginxProcess(free_port(), [s.port for s in instances])
    await asyncio.to_thread(nginx.start)
    yield nginx, instances
    await asyncio.to_thread(nginx.stop)


async def test_a_reply_survives_stopping_the_instance_that_serves_it_behind_the_load_balancer(
    cluster: tuple[NginxProcess, list[RunningServer]],
) -> None:
    nginx, instances = cluster
    base, ws_url = f"http://127.0.0.1:{nginx.port}", f"ws://127.0.0.1:{nginx.port}/v1/ws"
    n = await negotiate(base)
    async with WsClient.connect(ws_url, n["token"]) as client:
        await client.send({"type": "send", "client_message_id": "m1", "text": QUESTION})
        stream_id = (await client.recv())["stream_id"]
        first = await client.recv_until(lambda f: f["type"] == "delta" and f["seq"] >= 3)
        serving = next(s for s in instances if s.runtime.connections)
        stopping = asyncio.create_task(serving.stop())
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                frame = await client.recv()
                if frame["type"] != "ping":
                    first.append(frame)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    first = [f for f in first if "seq" in f]
    # Reconnect through the load balancer: it can only reach the other instance now.
    async with WsClient.connect(ws_url, n["token"]) as client:
        await client.send({"type": "resume", "stream_id": stream_id, "after_seq": first[-1]["seq"]})
        rest = await client.stream(stream_id, timeout=20)
    other = next(s for s in instances if s is not serving)
    assert other.runtime.connections <= 1
    events = first + rest
    assert_well_formed(events)
    assert joined_text(events) == events[-1]["text"] == compose_answer(other.runtime.brands["demo"], QUESTION)
    async with asyncio.timeout(20 * T):
        await stopping


async def test_sse_through_the_load_balancer_is_not_buffered_and_any_instance_serves_any_step(
    cluster: tuple[NginxProcess, list[RunningServer]],
) -> None:
    nginx, instances = cluster
    base = f"http://127.0.0.1:{nginx.port}"
    n = await negotiate(base)
    r = await post_message(base, n, QUESTION)
    stream_id = r.json()["stream_id"]
    # The first events arrive while the reply is still being generated: nginx does not buffer.
    partial = await read_sse(base, stream_id, n["token"], stop_after=3)
    assert [e.event for e in partial.events] == ["start", "delta", "delta"]
    assert any(s.runtime.manager.running for s in instances), "the reply should still be running"
    whole = await read_sse(base, stream_id, n["token"], after_seq=0, timeout=20)
    events = [e.data for e in whole.events]
    assert_well_formed(events)
    assert joined_text(events) == events[-1]["text"]
