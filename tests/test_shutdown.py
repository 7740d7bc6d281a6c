"""Graceful shutdown: stop taking work, close sockets with 1012, let replies finish within the grace period."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from persona.demo import compose_answer
from testkit import T
from testkit.clients import WsClient, assert_well_formed, joined_text, negotiate, post_message, read_sse
from testkit.server import ServerFactory

QUESTION = "How do I brew a pour-over, and how long does shipping take?"


async def test_shutdown_closes_websockets_with_1012_and_the_reply_finishes_for_a_resume_elsewhere(
    servers: ServerFactory, redis_url: str
) -> None:
    a = await servers(buffer_url=redis_url, offline_token_delay_ms=30, shutdown_grace_s=10)
    b = await servers(buffer_url=redis_url)
    n = await negotiate(a.base_url)
    async with WsClient.connect(a.ws_url, n["token"]) as client:
        await client.send({"type": "send", "client_message_id": "m1", "text": QUESTION})
        stream_id = (await client.recv())["stream_id"]
        first = await client.recv_until(lambda f: f["type"] == "delta" and f["seq"] >= 3)
        stopping = asyncio.create_task(a.stop())
        try:
            async with asyncio.timeout(5 * T):
                while True:
                    frame = await client.recv()
                    if frame["type"] == "delta":
                        first.append(frame)
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1012
    first = [f for f in first if "seq" in f]
    # The instance is draining: the job goes on; the client resumes on the other instance.
    async with WsClient.connect(b.ws_url, n["token"]) as client:
        await client.send({"type": "resume", "stream_id": stream_id, "after_seq": first[-1]["seq"]})
        rest = await client.stream(stream_id, timeout=15)
    events = first + rest
    assert_well_formed(events)
    assert events[-1]["type"] == "done" and events[-1]["finish_reason"] == "stop"
    assert joined_text(events) == events[-1]["text"] == compose_answer(a.runtime.brands["demo"], QUESTION)
    async with asyncio.timeout(15 * T):
        await stopping


async def test_a_reply_still_running_after_the_grace_period_ends_with_a_retryable_error(
    servers: ServerFactory, redis_url: str
) -> None:
    a = await servers(buffer_url=redis_url, offline_token_delay_ms=200, shutdown_grace_s=0.3)
    b = await servers(buffer_url=redis_url)
    n = await negotiate(a.base_url)
    r = await post_message(a.base_url, n, QUESTION)
    stream_id = r.json()["stream_id"]
    await a.stop()
    reader = await read_sse(b.base_url, stream_id, n["token"], after_seq=0)
    events = [e.data for e in reader.events]
    assert_well_formed(events)
    assert events[-1]["type"] == "error"
    assert events[-1]["code"] == "shutting_down" and events[-1]["retryable"] is True


async def test_an_open_sse_response_ends_at_shutdown_instead_of_holding_the_server(servers: ServerFactory) -> None:
    a = await servers(offline_token_delay_ms=300, shutdown_grace_s=0.2)
    n = await negotiate(a.base_url)
    r = await post_message(a.base_url, n, QUESTION)
    reading = asyncio.create_task(read_sse(a.base_url, r.json()["stream_id"], n["token"], timeout=20))
    async with asyncio.timeout(5 * T):
        while a.runtime.connections == 0:
            await asyncio.sleep(0.01)
    async with asyncio.timeout(10 * T):
        await a.stop()  # would wait for the SSE response forever without the shutdown hook
        reader = await reading
    assert reader.status == 200
    assert all(e.event != "done" for e in reader.events)


async def test_once_shutdown_began_new_messages_are_refused_with_503_and_websocket_sends_get_1012(
    servers: ServerFactory,
) -> None:
    server = await servers()
    n = await negotiate(server.base_url)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        server.runtime.manager.stop_accepting()  # the first step of shutdown, before sockets close
        await client.send({"type": "send", "client_message_id": "m1", "text": "hi"})
        frame = await client.recv()
        assert frame["type"] == "error" and frame["code"] == "shutting_down"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await client.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    r = await post_message(server.base_url, n, "hi", cmid="m2")
    assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"
