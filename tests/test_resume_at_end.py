"""A resume at or after a stream's terminal event answers at once (PROTOCOL §9), on both transports,
and an expired stream never makes an EventSource come back in a loop.

Regression: a client resuming at the last event of a finished stream was held open for up to
RESUME_WINDOW_S (600 s); a browser EventSource that is not closed after `done` does exactly that
by itself, and on an expired stream it reconnected once a second for as long as the tab was open."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from testkit import T
from testkit.clients import WsClient, negotiate, read_sse
from testkit.server import RunningServer

QUESTION = "How long does delivery take?"


async def finished_stream(server: RunningServer) -> tuple[dict[str, Any], str, int]:
    """(negotiated, stream_id, terminal seq) of a reply that has ended."""
    n = await negotiate(server.base_url)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        await client.send({"type": "send", "client_message_id": "m1", "text": QUESTION})
        accepted = await client.recv_until(lambda f: f["type"] == "accepted")
        stream_id = accepted[-1]["stream_id"]
        events = await client.stream(stream_id)
    return n, stream_id, events[-1]["seq"]


@pytest.mark.parametrize("past", [0, 1, 50])
async def test_a_websocket_resume_at_or_after_the_terminal_event_is_answered_at_once_with_ended(
    server: RunningServer, past: int
) -> None:
    n, stream_id, last = await finished_stream(server)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        started = time.monotonic()
        await client.send({"type": "resume", "stream_id": stream_id, "after_seq": last + past})
        frames = await client.recv_until(lambda f: f["type"] == "ended", timeout=2)
        assert time.monotonic() - started < 1.5 * T
    assert frames[-1] == {"type": "ended", "stream_id": stream_id, "last_seq": last}
    assert [f for f in frames if "seq" in f] == [], "no stream event is sent again"


async def test_a_websocket_resume_before_the_terminal_event_still_gets_the_rest(server: RunningServer) -> None:
    n, stream_id, last = await finished_stream(server)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        await client.send({"type": "resume", "stream_id": stream_id, "after_seq": last - 1})
        frames = await client.recv_until(lambda f: f.get("seq") == last)
    assert [f["seq"] for f in frames if "seq" in f] == [last]


@pytest.mark.parametrize("how", ["after_seq", "last_event_id"])
@pytest.mark.parametrize("past", [0, 7])
async def test_an_sse_events_request_at_or_after_the_terminal_event_is_204_no_content(
    server: RunningServer, how: str, past: int
) -> None:
    n, stream_id, last = await finished_stream(server)
    params: dict[str, Any] = {"token": n["token"]}
    headers: dict[str, str] = {}
    if how == "after_seq":
        params["after_seq"] = last + past
    else:
        headers["Last-Event-ID"] = str(last + past)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T, verify=False) as http:
        resp = await http.get(f"/v1/streams/{stream_id}/events", params=params, headers=headers)
    assert resp.status_code == 204 and resp.content == b""


async def test_an_sse_request_before_the_terminal_event_still_streams_the_rest(server: RunningServer) -> None:
    n, stream_id, last = await finished_stream(server)
    reader = await read_sse(server.base_url, stream_id, n["token"], after_seq=last - 1)
    assert reader.status == 200 and [e.id for e in reader.events] == [last]


async def test_an_expired_stream_over_sse_says_so_and_tells_eventsource_not_to_come_back_soon(
    server: RunningServer,
) -> None:
    n = await negotiate(server.base_url)
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=5 * T, verify=False) as http,
        http.stream("GET", "/v1/streams/s_gone/events", params={"token": n["token"]}) as resp,
    ):
        body = (await resp.aread()).decode()
    assert resp.status_code == 200
    retries = [int(line.split(":", 1)[1]) for line in body.splitlines() if line.startswith("retry:")]
    assert retries[-1] >= 3_600_000, body
    assert "event: error" in body and "stream_expired" in body


async def test_on_the_redis_buffer_both_transports_answer_a_resume_at_the_end_at_once(
    servers: Any, redis_url: str
) -> None:
    server = await servers(buffer_url=redis_url)
    n, stream_id, last = await finished_stream(server)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        await client.send({"type": "resume", "stream_id": stream_id, "after_seq": last})
        frames = await client.recv_until(lambda f: f["type"] == "ended", timeout=2)
    assert frames[-1]["last_seq"] == last
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T, verify=False) as http:
        resp = await http.get(f"/v1/streams/{stream_id}/events", params={"token": n["token"], "after_seq": last})
    assert resp.status_code == 204
