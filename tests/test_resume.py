"""Drop mid-reply and resume: same transport, the other transport, another instance; no client at all."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.uri import parse_uri

from persona.demo import compose_answer
from testkit import T
from testkit.clients import WsClient, assert_well_formed, joined_text, negotiate, post_message, read_sse, stream_events
from testkit.server import RunningServer, ServerFactory

QUESTION = "How do I brew a pour-over, and how long does shipping take?"
SLOW = {"offline_token_delay_ms": 25}


async def partial_ws_reply(server: RunningServer, token: str, deltas: int = 4) -> tuple[str, list[dict[str, Any]]]:
    """Send over WebSocket, read ``start`` and a few deltas, then cut the connection."""
    async with WsClient.connect(server.ws_url, token) as client:
        await client.send({"type": "send", "client_message_id": "m1", "text": QUESTION})
        accepted = await client.recv()
        stream_id = accepted["stream_id"]
        seen = await client.recv_until(lambda f: f["type"] == "delta" and f["seq"] >= 1 + deltas)
        # Leaving the block closes the socket mid-reply.
    events = stream_events(seen, stream_id)
    assert events[-1]["type"] == "delta", "the reply must still be running when we drop"
    return stream_id, events


def check_whole(server: RunningServer, events: list[dict[str, Any]]) -> None:
    assert_well_formed(events)
    assert joined_text(events) == events[-1]["text"] == compose_answer(server.runtime.brands["demo"], QUESTION)


async def test_a_reply_dropped_on_websocket_resumes_on_websocket_with_every_seq_once(servers: ServerFactory) -> None:
    server = await servers(**SLOW)
    n = await negotiate(server.base_url)
    stream_id, first = await partial_ws_reply(server, n["token"])
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        await client.send({"type": "resume", "stream_id": stream_id, "after_seq": first[-1]["seq"]})
        rest = await client.stream(stream_id)
    assert rest[0]["seq"] == first[-1]["seq"] + 1
    check_whole(server, first + rest)


async def test_a_reply_dropped_on_websocket_resumes_over_sse_with_last_event_id(servers: ServerFactory) -> None:
    server = await servers(**SLOW)
    n = await negotiate(server.base_url)
    stream_id, first = await partial_ws_reply(server, n["token"])
    reader = await read_sse(server.base_url, stream_id, n["token"], last_event_id=first[-1]["seq"])
    rest = [e.data for e in reader.events]
    check_whole(server, first + rest)


async def test_a_reply_dropped_on_sse_resumes_over_websocket(servers: ServerFactory) -> None:
    server = await servers(**SLOW)
    n = await negotiate(server.base_url)
    r = await post_message(server.base_url, n, QUESTION)
    stream_id = r.json()["stream_id"]
    partial = await read_sse(server.base_url, stream_id, n["token"], stop_after=5)
    first = [e.data for e in partial.events]
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        await client.send({"type": "resume", "stream_id": stream_id, "after_seq": first[-1]["seq"]})
        rest = await client.stream(stream_id)
    check_whole(server, first + rest)


async def test_a_reply_dropped_on_one_instance_resumes_on_another_sharing_redis(
    servers: ServerFactory, redis_url: str
) -> None:
    a = await servers(buffer_url=redis_url, **SLOW)
    b = await servers(buffer_url=redis_url, **SLOW)
    n = await negotiate(a.base_url)
    stream_id, first = await partial_ws_reply(a, n["token"])
    async with WsClient.connect(b.ws_url, n["token"]) as client:
        await client.send({"type": "resume", "stream_id": stream_id, "after_seq": first[-1]["seq"]})
        rest = await client.stream(stream_id)
    check_whole(a, first + rest)
    # And over SSE on the second instance, from the very start.
    reader = await read_sse(b.base_url, stream_id, n["token"], after_seq=0)
    assert [e.data for e in reader.events] == first + rest


async def test_a_retried_send_on_another_instance_returns_the_first_stream(
    servers: ServerFactory, redis_url: str
) -> None:
    a = await servers(buffer_url=redis_url, **SLOW)
    b = await servers(buffer_url=redis_url, **SLOW)
    n = await negotiate(a.base_url)
    stream_id, _ = await partial_ws_reply(a, n["token"])
    async with WsClient.connect(b.ws_url, n["token"]) as client:
        await client.send({"type": "send", "client_message_id": "m1", "text": QUESTION})
        accepted = await client.recv()
        assert accepted == {"type": "accepted", "client_message_id": "m1", "stream_id": stream_id}
        events = await client.stream(stream_id)
    check_whole(a, events)
    async with httpx.AsyncClient(base_url=b.base_url) as http:
        history = (
            await http.get(
                f"/v1/conversations/{n['conversation_id']}", headers={"Authorization": f"Bearer {n['token']}"}
            )
        ).json()
    assert [t["role"] for t in history["turns"]] == ["user", "assistant"]


async def test_a_reply_finishes_while_no_client_is_connected_and_a_later_resume_gets_all_of_it(
    servers: ServerFactory,
) -> None:
    server = await servers(**SLOW)
    n = await negotiate(server.base_url)
    stream_id, first = await partial_ws_reply(server, n["token"], deltas=1)
    # Nobody is connected now; wait until the generation job has ended on its own.
    async with asyncio.timeout(10 * T):
        while server.runtime.manager.running:
            await asyncio.sleep(0.02)
    info = await server.runtime.buffer.stream_info(stream_id)
    assert info is not None and info.terminal
    reader = await read_sse(server.base_url, stream_id, n["token"], after_seq=first[-1]["seq"])
    check_whole(server, first + [e.data for e in reader.events])


async def test_a_cancel_sent_to_another_instance_stops_the_reply_where_it_runs(
    servers: ServerFactory, redis_url: str
) -> None:
    a = await servers(buffer_url=redis_url, offline_token_delay_ms=60)
    b = await servers(buffer_url=redis_url, offline_token_delay_ms=60)
    n = await negotiate(a.base_url)
    stream_id, first = await partial_ws_reply(a, n["token"], deltas=1)
    async with httpx.AsyncClient(base_url=b.base_url) as http:
        r = await http.post(f"/v1/streams/{stream_id}/cancel", headers={"Authorization": f"Bearer {n['token']}"})
        assert r.status_code == 202
    reader = await read_sse(b.base_url, stream_id, n["token"], after_seq=first[-1]["seq"])
    events = first + [e.data for e in reader.events]
    assert_well_formed(events)
    assert events[-1]["type"] == "done" and events[-1]["finish_reason"] == "cancelled"
    assert joined_text(events) == events[-1]["text"]
    assert len(events[-1]["text"]) < len(compose_answer(a.runtime.brands["demo"], QUESTION))


async def test_a_stream_gone_from_the_buffer_is_reported_expired_on_both_transports(servers: ServerFactory) -> None:
    """A memory buffer loses everything on restart: a resume there is told, not left hanging."""
    server = await servers()
    n = await negotiate(server.base_url)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        await client.send({"type": "resume", "stream_id": "s_from_before_the_restart", "after_seq": 3})
        error = await client.recv()
    assert error["type"] == "error" and error["code"] == "stream_expired" and "seq" not in error
    reader = await read_sse(server.base_url, "s_from_before_the_restart", n["token"], after_seq=3)
    assert [e.event for e in reader.events] == ["error"]
    assert reader.events[0].data["code"] == "stream_expired"


@pytest.mark.parametrize("buffer", ["memory", "redis"])
async def test_fifty_concurrent_clients_each_stream_a_whole_reply_with_no_loss(
    servers: ServerFactory, redis_url: str, buffer: str
) -> None:
    server = await servers(buffer_url=redis_url if buffer == "redis" else "memory://", offline_token_delay_ms=5)
    brand = server.runtime.brands["demo"]
    questions = ["shipping?", "decaf beans?", "pour over recipe?", "returns policy?", "cafe hours?"]

    async def over_ws(i: int) -> None:
        n = await negotiate(server.base_url)
        question = questions[i % len(questions)]
        async with WsClient.connect(server.ws_url, n["token"]) as client:
            await client.send({"type": "send", "client_message_id": f"m{i}", "text": question})
            accepted = await client.recv(timeout=20)
            events = await client.stream(accepted["stream_id"], timeout=30)
        assert_well_formed(events)
        assert joined_text(events) == events[-1]["text"] == compose_answer(brand, question)

    async def over_sse(i: int) -> None:
        n = await negotiate(server.base_url)
        question = questions[i % len(questions)]
        r = await post_message(server.base_url, n, question, cmid=f"m{i}")
        reader = await read_sse(server.base_url, r.json()["stream_id"], n["token"], timeout=30)
        events = [e.data for e in reader.events]
        assert_well_formed(events)
        assert joined_text(events) == events[-1]["text"] == compose_answer(brand, question)

    async with asyncio.timeout(60 * T):
        await asyncio.gather(*(over_ws(i) if i % 2 else over_sse(i) for i in range(50)))


async def test_a_websocket_client_that_stops_reading_is_dropped_by_the_server_and_can_resume(
    servers: ServerFactory,
) -> None:
    """Slow consumer: a bounded outbox and a write deadline; the server lets go, the log keeps the reply."""
    server = await servers(
        offline_token_delay_ms=0,
        outbox_max_frames=4,
        send_timeout_s=1.0,  # also the deadline of the SSE resume below, which shares this loop
        stream_max_events=20_000,
        stream_max_chars=5_000_000,
        max_reply_tokens=20_000,
        # This is about the transport: megabytes of text as fast as the server can send them. The guard
        # would spend ~20 µs per character of these 540-character words (its pattern families), so
        # filling the socket buffers would take longer than the test waits.
        guard_enabled=False,
    )
    brand = server.runtime.brands["demo"]
    # A long answer of big words: megabytes of frames, more than socket buffers absorb.
    brand.knowledge[0].text = ("lorem_ipsum_dolor_sit_amet_" * 20 + " ") * 8000
    n = await negotiate(server.base_url)
    # A sans-I/O WebSocket client on a raw stream whose reader stops after 2 KiB: it never reads again.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, limit=1024)
    proto = ClientProtocol(parse_uri(server.ws_url))
    proto.send_request(proto.connect())
    writer.write(b"".join(proto.data_to_send()))
    async with asyncio.timeout(5 * T):
        while proto.state is State.CONNECTING:
            proto.receive_data(await reader.read(1024))
    proto.send_text(json.dumps({"type": "hello", "token": n["token"]}).encode())
    proto.send_text(json.dumps({"type": "send", "client_message_id": "m1", "text": "shipping"}).encode())
    writer.write(b"".join(proto.data_to_send()))
    try:
        async with asyncio.timeout(20 * T):
            while server.runtime.connections == 0:
                await asyncio.sleep(0.01)
            while server.runtime.connections:
                await asyncio.sleep(0.05)
    finally:
        writer.close()
    # The reply went on without the client; a resume from the start gets all of it.
    turns = await server.runtime.buffer.history(n["conversation_id"])
    stream_id = turns[1].stream_id  # type: ignore[union-attr]
    sse = await read_sse(server.base_url, stream_id, n["token"], after_seq=0, timeout=30)
    events = [e.data for e in sse.events]
    assert_well_formed(events)
    assert joined_text(events) == events[-1]["text"] == compose_answer(brand, "shipping")
