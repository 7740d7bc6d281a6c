"""docs/protocol.md §4, the WebSocket transport, against a real server on a real socket.

Every wait is bounded by a deadline in the scaled unit ``T``; a close is observed as the close
code the client actually received, never inferred from silence.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from api.auth import issue_token
from persona.demo import compose_answer
from testkit import T
from testkit.clients import WsClient, assert_well_formed, joined_text, stream_events
from testkit.server import SECRET, RunningServer, ServerFactory

QUESTION = "How long does shipping take?"


# --- helpers ----------------------------------------------------------------------------------------


def http_client(server: RunningServer) -> httpx.AsyncClient:
    # Plain HTTP to 127.0.0.1: skipping the CA bundle load saves ~50 ms per client.
    return httpx.AsyncClient(base_url=server.base_url, timeout=5 * T, verify=False)


async def negotiate(server: RunningServer, brand: str = "demo") -> dict[str, Any]:
    """``testkit.clients.negotiate`` over :func:`http_client`."""
    async with http_client(server) as http:
        response = await http.post("/v1/negotiate", json={"brand": brand})
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


async def wait_closed(client: WsClient, timeout: float = 5.0) -> int:
    """Read (and keep in ``client.frames``) every frame until the server closes; its close code."""
    try:
        async with asyncio.timeout(timeout * T):
            while True:
                await client.recv(timeout=timeout)
    except ConnectionClosed:
        pass
    code = client.ws.close_code
    assert code is not None
    return int(code)


async def next_frame(client: WsClient, timeout: float = 5.0) -> dict[str, Any]:
    """The next frame that is not a server heartbeat ping."""
    frames = await client.recv_until(lambda f: True, timeout)
    return frames[-1]


async def assert_still_open(client: WsClient) -> None:
    """The connection answers a ping with a pong as its very next frame."""
    await client.send({"type": "ping"})
    assert await next_frame(client) == {"type": "pong"}


async def send_and_accept(client: WsClient, client_message_id: str, text: str = QUESTION) -> str:
    await client.send({"type": "send", "client_message_id": client_message_id, "text": text})
    accepted = await next_frame(client)
    assert accepted["type"] == "accepted", accepted
    assert accepted["client_message_id"] == client_message_id
    stream_id: str = accepted["stream_id"]
    return stream_id


async def events_through(client: WsClient, stream_id: str, seq: int) -> list[dict[str, Any]]:
    """The stream's events up to and including ``seq`` (a non-terminal point mid-stream)."""
    frames = await client.recv_until(lambda f: f.get("stream_id") == stream_id and f.get("seq") == seq)
    return stream_events(frames, stream_id)


async def history(server: RunningServer, negotiated: dict[str, Any]) -> list[dict[str, Any]]:
    async with http_client(server) as http:
        response = await http.get(
            f"/v1/conversations/{negotiated['conversation_id']}",
            headers={"Authorization": f"Bearer {negotiated['token']}"},
        )
    assert response.status_code == 200, response.text
    turns: list[dict[str, Any]] = response.json()["turns"]
    return turns


def assert_bad_request(frame: dict[str, Any]) -> None:
    assert frame["type"] == "error" and frame["code"] == "bad_request", frame
    assert isinstance(frame["message"], str) and frame["message"]
    assert "seq" not in frame


# --- hello / welcome --------------------------------------------------------------------------------


async def test_hello_with_the_negotiated_token_is_answered_by_welcome_with_conversation_and_heartbeat(
    server: RunningServer,
) -> None:
    n = await negotiate(server)
    async with WsClient.connect(server.ws_url) as client:
        await client.send({"type": "hello", "token": n["token"]})
        welcome = await client.recv()
    assert welcome == {"type": "welcome", "conversation_id": n["conversation_id"], "heartbeat_ms": 15_000}


async def test_a_connection_that_sends_no_hello_within_the_hello_timeout_is_closed_with_4408(
    servers: ServerFactory,
) -> None:
    server = await servers(hello_timeout_s=0.3)
    async with WsClient.connect(server.ws_url) as client:
        started = time.monotonic()
        assert await wait_closed(client, timeout=3) == 4408
        elapsed = time.monotonic() - started
    assert client.frames == []
    assert elapsed >= 0.25


def _forged(conversation_id: str) -> str:
    return issue_token(b"not-the-server-secret", conversation_id, "demo", 3600)


def _expired(conversation_id: str) -> str:
    return issue_token(SECRET.encode(), conversation_id, "demo", -60)


def _tampered(conversation_id: str) -> str:
    # A genuine signature over one conversation, with the body swapped for another conversation.
    genuine = issue_token(SECRET.encode(), "c_someone_else", "demo", 3600)
    body = issue_token(SECRET.encode(), conversation_id, "demo", 3600).split(".")[0]
    return body + "." + genuine.split(".")[1]


@pytest.mark.parametrize(
    "make_token",
    [lambda cid: "not-a-token", _forged, _expired, _tampered],
    ids=["garbage", "forged", "expired", "tampered"],
)
async def test_hello_with_an_invalid_token_is_closed_with_4401_and_no_welcome(
    server: RunningServer, make_token: Any
) -> None:
    n = await negotiate(server)
    async with WsClient.connect(server.ws_url) as client:
        await client.send({"type": "hello", "token": make_token(n["conversation_id"])})
        assert await wait_closed(client) == 4401
    assert [f for f in client.frames if f["type"] == "welcome"] == []


async def test_a_first_frame_that_is_not_hello_gets_bad_request_and_a_later_hello_still_works(
    server: RunningServer,
) -> None:
    n = await negotiate(server)
    async with WsClient.connect(server.ws_url) as client:
        await client.send({"type": "ping"})
        assert_bad_request(await client.recv())
        await client.send({"type": "hello", "token": n["token"]})
        welcome = await client.recv()
        assert welcome["type"] == "welcome" and welcome["conversation_id"] == n["conversation_id"]
        await assert_still_open(client)


# --- send / stream ----------------------------------------------------------------------------------


async def test_send_is_accepted_then_the_stream_is_numbered_from_1_with_start_first_and_one_terminal(
    server: RunningServer,
) -> None:
    n = await negotiate(server)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        await client.send({"type": "send", "client_message_id": "m1", "text": QUESTION})
        accepted = await client.recv()
        assert set(accepted) == {"type", "client_message_id", "stream_id"}
        assert accepted["type"] == "accepted" and accepted["client_message_id"] == "m1"
        events = await client.stream(accepted["stream_id"])
    assert_well_formed(events)
    assert all(e["stream_id"] == accepted["stream_id"] for e in events)
    start = events[0]
    assert start["conversation_id"] == n["conversation_id"] and start["client_message_id"] == "m1"
    assert {e["type"] for e in events[1:-1]} == {"delta"}
    assert events[-1]["type"] == "done" and events[-1]["finish_reason"] == "stop"
    assert joined_text(events) == events[-1]["text"] == compose_answer(server.runtime.brands["demo"], QUESTION)


async def test_sending_a_used_client_message_id_on_the_same_connection_replays_the_first_stream_and_starts_nothing(
    server: RunningServer,
) -> None:
    n = await negotiate(server)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        first_id = await send_and_accept(client, "m1")
        first = await client.stream(first_id)
        again_id = await send_and_accept(client, "m1")
        again = await client.stream(again_id)
    assert again_id == first_id
    assert again == first
    assert_well_formed(again)
    turns = await history(server, n)
    assert [t for t in turns if t["role"] == "user"] == [{"role": "user", "text": QUESTION, "client_message_id": "m1"}]
    assert [t["stream_id"] for t in turns if t["role"] == "assistant"] == [first_id]


async def test_resending_a_client_message_id_on_a_new_connection_mid_reply_gets_the_first_stream_from_seq_1(
    servers: ServerFactory,
) -> None:
    server = await servers(offline_token_delay_ms=20)
    n = await negotiate(server)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        first_id = await send_and_accept(client, "m1")
        seen = await events_through(client, first_id, 3)
    # The client dropped before the reply ended and retries the same message on a new connection.
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        again_id = await send_and_accept(client, "m1")
        events = await client.stream(again_id)
    assert again_id == first_id
    assert_well_formed(events)
    assert events[:3] == seen
    assert events[-1]["finish_reason"] == "stop"
    assert joined_text(events) == events[-1]["text"] == compose_answer(server.runtime.brands["demo"], QUESTION)
    turns = await history(server, n)
    assert [t["client_message_id"] for t in turns if t["role"] == "user"] == ["m1"]
    assert [(t["stream_id"], t["status"]) for t in turns if t["role"] == "assistant"] == [(first_id, "done")]


# --- resume / cancel --------------------------------------------------------------------------------


async def test_resume_after_seq_n_of_a_finished_stream_gets_exactly_the_events_after_n(server: RunningServer) -> None:
    n = await negotiate(server)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        stream_id = await send_and_accept(client, "m1")
        full = await client.stream(stream_id)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        await client.send({"type": "resume", "stream_id": stream_id, "after_seq": 3})
        rest = await client.stream(stream_id)
        # Nothing else follows the terminal event: the next frame is the answer to our ping.
        await assert_still_open(client)
    assert rest == full[3:]
    assert_well_formed(rest, from_seq=4)


async def test_resume_mid_reply_on_a_new_connection_gets_the_rest_live_with_no_gap_or_duplicate(
    servers: ServerFactory,
) -> None:
    server = await servers(offline_token_delay_ms=20)
    n = await negotiate(server)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        stream_id = await send_and_accept(client, "m1")
        seen = await events_through(client, stream_id, 3)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        await client.send({"type": "resume", "stream_id": stream_id, "after_seq": 3})
        rest = await client.stream(stream_id)
    assert_well_formed(rest, from_seq=4)
    events = seen + rest
    assert_well_formed(events)
    assert joined_text(events) == events[-1]["text"] == compose_answer(server.runtime.brands["demo"], QUESTION)


async def test_cancel_ends_the_stream_with_done_cancelled_and_the_text_streamed_so_far(servers: ServerFactory) -> None:
    server = await servers(offline_token_delay_ms=50)
    n = await negotiate(server)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        stream_id = await send_and_accept(client, "m1")
        await client.recv_until(lambda f: f.get("stream_id") == stream_id and f["type"] == "delta")
        await client.send({"type": "cancel", "stream_id": stream_id})
        await client.stream(stream_id)
    events = stream_events(client.frames, stream_id)
    assert_well_formed(events)
    done = events[-1]
    assert done["type"] == "done" and done["finish_reason"] == "cancelled"
    assert done["text"] == joined_text(events)
    assert done["text"] != compose_answer(server.runtime.brands["demo"], QUESTION)
    turns = await history(server, n)
    assert [(t["status"], t["text"]) for t in turns if t["role"] == "assistant"] == [("done", done["text"])]


@pytest.mark.parametrize("kind", ["resume", "cancel"])
async def test_resume_or_cancel_of_an_unknown_stream_gets_a_stream_expired_error_without_seq(
    server: RunningServer, kind: str
) -> None:
    n = await negotiate(server)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        await client.send({"type": kind, "stream_id": "s_AAAAAAAAAAAAAAAAAAAAAA", "after_seq": 0})
        frame = await next_frame(client)
        assert frame["type"] == "error" and frame["code"] == "stream_expired", frame
        assert "seq" not in frame
        await assert_still_open(client)


async def test_resume_or_cancel_of_another_conversations_stream_is_forbidden_and_leaves_it_running(
    servers: ServerFactory,
) -> None:
    server = await servers(offline_token_delay_ms=20)
    owner, intruder = await negotiate(server), await negotiate(server)
    async with (
        WsClient.connect(server.ws_url, owner["token"]) as owner_ws,
        WsClient.connect(server.ws_url, intruder["token"]) as intruder_ws,
    ):
        stream_id = await send_and_accept(owner_ws, "m1")
        await intruder_ws.send({"type": "resume", "stream_id": stream_id, "after_seq": 0})
        refused_resume = await next_frame(intruder_ws)
        await intruder_ws.send({"type": "cancel", "stream_id": stream_id})
        refused_cancel = await next_frame(intruder_ws)
        events = await owner_ws.stream(stream_id)
        await assert_still_open(intruder_ws)
    for frame in (refused_resume, refused_cancel):
        assert frame["type"] == "error" and frame["code"] == "forbidden", frame
        assert "seq" not in frame
    assert [f for f in intruder_ws.frames if "seq" in f] == []
    assert_well_formed(events)
    assert events[-1]["finish_reason"] == "stop"


# --- heartbeats ------------------------------------------------------------------------------------


async def test_ping_is_answered_by_pong(server: RunningServer) -> None:
    n = await negotiate(server)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        await client.send({"type": "ping"})
        assert await client.recv() == {"type": "pong"}


async def test_the_server_sends_ping_after_heartbeat_ms_of_silence(servers: ServerFactory) -> None:
    server = await servers(heartbeat_ms=200)
    n = await negotiate(server)
    async with WsClient.connect(server.ws_url) as client:
        await client.send({"type": "hello", "token": n["token"]})
        welcome = await client.recv()
        assert welcome["heartbeat_ms"] == 200
        quiet_since = time.monotonic()
        assert await client.recv(timeout=2) == {"type": "ping"}
        first_gap = time.monotonic() - quiet_since
        assert await client.recv(timeout=2) == {"type": "ping"}
    assert first_gap >= 0.15


# --- bad frames, limits ----------------------------------------------------------------------------

BAD_FRAMES: list[tuple[str, str | bytes, str]] = [
    ("not-json", "{nope", "JSON"),
    ("json-array", "[1, 2]", "object"),
    ("json-string", '"ping"', "object"),
    ("no-type", json.dumps({"text": "hi"}), "type"),
    ("unknown-type", json.dumps({"type": "subscribe"}), "subscribe"),
    ("send-missing-client-message-id", json.dumps({"type": "send", "text": "hi"}), "client_message_id"),
    ("resume-missing-after-seq", json.dumps({"type": "resume", "stream_id": "s_x"}), "after_seq"),
    ("resume-negative-after-seq", json.dumps({"type": "resume", "stream_id": "s_x", "after_seq": -1}), "after_seq"),
    ("text-too-long", json.dumps({"type": "send", "client_message_id": "m1", "text": "x" * 4001}), "too long"),
    ("empty-text", json.dumps({"type": "send", "client_message_id": "m1", "text": ""}), "text"),
    ("blank-text", json.dumps({"type": "send", "client_message_id": "m1", "text": "   "}), "empty"),
    ("binary-frame", b'{"type": "ping"}', ""),
]


def sent_object(raw: str | bytes) -> dict[str, object]:
    """The JSON object a text frame carried, else ``{}``."""
    try:
        obj = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


@pytest.mark.parametrize(("raw", "mentions"), [(r, m) for _, r, m in BAD_FRAMES], ids=[i for i, _, _ in BAD_FRAMES])
async def test_a_bad_frame_gets_a_bad_request_error_without_seq_and_the_connection_stays_open(
    server: RunningServer, raw: str | bytes, mentions: str
) -> None:
    n = await negotiate(server)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        await client.ws.send(raw)
        frame = await next_frame(client)
        assert_bad_request(frame)
        # docs/protocol.md §9: a refused frame echoes its own client_message_id, when it had one.
        sent = sent_object(raw)
        echoed = {"client_message_id"} if "client_message_id" in sent else set()
        assert set(frame) == {"type", "code", "message"} | echoed
        assert frame.get("client_message_id") == sent.get("client_message_id")
        assert mentions.lower() in frame["message"].lower(), frame["message"]
        await assert_still_open(client)
    assert [f for f in client.frames if f["type"] in ("accepted", "start")] == []


async def test_more_bad_frames_than_ws_max_bad_frames_close_the_connection_with_4400(servers: ServerFactory) -> None:
    server = await servers(ws_max_bad_frames=3)
    n = await negotiate(server)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        for _ in range(3):
            await client.send("{nope")
            assert_bad_request(await next_frame(client))
        await client.send("{nope")
        assert await wait_closed(client) == 4400


async def test_a_flood_of_frames_beyond_the_rate_burst_closes_the_connection_with_4429(servers: ServerFactory) -> None:
    # Also pins the 3.11 wait_for race fixed in dea68df: pongs queued just before the close made the
    # WS sender swallow its cancellation, so the 4429 close never went out.
    server = await servers(ws_rate_per_s=1.0, ws_rate_burst=5)
    n = await negotiate(server)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        try:
            for _ in range(20):
                await client.send({"type": "ping"})
        except ConnectionClosed:
            pass  # the server closed while we were still flooding
        assert await wait_closed(client, timeout=2) == 4429
    # No more frames were served than the burst allows (hello took one of them).
    assert len([f for f in client.frames if f["type"] == "pong"]) <= 4


@pytest.mark.parametrize("size", [1_500, 5_000], ids=["over-the-app-limit", "over-the-socket-limit"])
async def test_a_frame_larger_than_max_frame_bytes_closes_the_connection_with_1009(
    servers: ServerFactory, size: int
) -> None:
    server = await servers(max_frame_bytes=1024)
    n = await negotiate(server)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        frame = {"type": "send", "client_message_id": "m1", "text": ""}
        frame["text"] = "x" * (size - len(json.dumps(frame)))
        await client.send(frame)
        assert await wait_closed(client) == 1009
    assert [f for f in client.frames if f["type"] in ("accepted", "start")] == []


# --- origins ---------------------------------------------------------------------------------------


async def test_a_websocket_from_a_disallowed_origin_is_refused(servers: ServerFactory) -> None:
    server = await servers(allowed_origins=["https://brand.example"])
    # The server's reading of "refused": the handshake is rejected (HTTP 403), no socket opens.
    with pytest.raises(InvalidStatus) as refused:
        async with WsClient.connect(server.ws_url, origin="https://evil.example"):
            pass
    assert refused.value.response.status_code == 403


async def test_a_websocket_from_an_allowed_origin_or_with_no_origin_is_welcomed(servers: ServerFactory) -> None:
    server = await servers(allowed_origins=["https://brand.example"])
    n = await negotiate(server)
    async with WsClient.connect(server.ws_url, n["token"], origin="https://brand.example") as client:
        await assert_still_open(client)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        await assert_still_open(client)
