"""Protocol clients for tests and benchmarks, and checks of the streams they received.

Every client speaks plain HTTP to 127.0.0.1: ``verify=False`` skips loading the CA bundle, which
costs ~65 ms of CPU per client and, with hundreds of clients, starves the event loop. Every wait is
bounded by a deadline in the scaled unit :data:`testkit.T`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets

from testkit import T


async def negotiate(base_url: str, brand: str = "demo", **extra: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=5 * T, verify=False) as client:
        response = await client.post("/v1/negotiate", json={"brand": brand, **extra})
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


async def post_message(base_url: str, negotiated: dict[str, Any], text: str, cmid: str = "m1") -> httpx.Response:
    """Send a user message the SSE way: ``POST /v1/conversations/{id}/messages`` with the Bearer token."""
    async with httpx.AsyncClient(base_url=base_url, timeout=20 * T, verify=False) as client:
        return await client.post(
            f"/v1/conversations/{negotiated['conversation_id']}/messages",
            json={"client_message_id": cmid, "text": text},
            headers={"Authorization": f"Bearer {negotiated['token']}"},
        )


class WsClient:
    """A protocol-speaking WebSocket client that keeps every frame it received."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str, token: str | None = None, **kwargs: Any) -> AsyncIterator[WsClient]:
        async with websockets.connect(url, open_timeout=5 * T, close_timeout=2 * T, **kwargs) as ws:
            client = cls(ws)
            if token is not None:
                await client.send({"type": "hello", "token": token})
                welcome = await client.recv()
                assert welcome["type"] == "welcome", welcome
            yield client

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout * T):
            raw = await self.ws.recv()
        frame: dict[str, Any] = json.loads(raw)
        self.frames.append(frame)
        return frame

    async def recv_until(self, predicate: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Frames until (and including) the first that satisfies ``predicate``; pings skipped."""
        out = []
        async with asyncio.timeout(timeout * T):
            while True:
                frame = await self.recv(timeout=timeout)
                if frame["type"] == "ping":
                    continue
                out.append(frame)
                if predicate(frame):
                    return out

    async def stream(self, stream_id: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The events of one stream up to its terminal event."""
        frames = await self.recv_until(
            lambda f: f.get("stream_id") == stream_id and f["type"] in ("done", "error"), timeout
        )
        return stream_events(frames, stream_id)


def stream_events(frames: list[dict[str, Any]], stream_id: str) -> list[dict[str, Any]]:
    """The events of one stream among ``frames`` (those with its id and a ``seq``), in the order received."""
    return [f for f in frames if f.get("stream_id") == stream_id and "seq" in f]


async def ws_turn(
    ws_url: str, negotiated: dict[str, Any], text: str, cmid: str = "m1", *, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Send one message the WebSocket way, on a new connection; the events of its stream to the terminal one."""
    async with WsClient.connect(ws_url, negotiated["token"]) as client:
        await client.send({"type": "send", "client_message_id": cmid, "text": text})
        accepted = await client.recv()
        assert accepted["type"] == "accepted", accepted
        return await client.stream(accepted["stream_id"], timeout)


@dataclass
class SseEvent:
    event: str
    data: dict[str, Any]
    id: int | None = None


@dataclass
class SseReader:
    events: list[SseEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 0


async def read_sse(
    base_url: str,
    stream_id: str,
    token: str,
    *,
    after_seq: int | None = None,
    last_event_id: int | None = None,
    stop_after: int | None = None,
    timeout: float = 10.0,
    use_query_token: bool = False,
) -> SseReader:
    """Read ``/v1/streams/{id}/events`` until the server ends it (or ``stop_after`` events)."""
    headers = {} if use_query_token else {"Authorization": f"Bearer {token}"}
    params: dict[str, Any] = {"token": token} if use_query_token else {}
    if after_seq is not None:
        params["after_seq"] = after_seq
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    reader = SseReader()
    url = f"/v1/streams/{stream_id}/events"
    async with (
        asyncio.timeout(timeout * T),
        httpx.AsyncClient(base_url=base_url, timeout=None, verify=False) as client,
        client.stream("GET", url, headers=headers, params=params) as resp,
    ):
        reader.status = resp.status_code
        reader.headers = dict(resp.headers)
        if resp.status_code != 200:
            await resp.aread()
            reader.events.append(SseEvent("http_error", resp.json()))
            return reader
        fields: dict[str, str] = {}
        async for line in resp.aiter_lines():
            if line.startswith(":"):
                reader.comments.append(line[1:].strip())
            elif line == "":
                if "data" in fields:
                    ev = SseEvent(fields.get("event", "message"), json.loads(fields["data"]))
                    ev.id = int(fields["id"]) if "id" in fields else None
                    reader.events.append(ev)
                    if stop_after is not None and len(reader.events) >= stop_after:
                        return reader
                fields = {}
            else:
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
    return reader


def joined_text(events: list[dict[str, Any]]) -> str:
    """What a client shows: deltas appended, a retract replacing everything so far."""
    text = ""
    for event in events:
        if event["type"] == "delta":
            text += event["text"]
        elif event["type"] == "retract":
            text = event["text"]
    return text


def assert_well_formed(events: list[dict[str, Any]], *, from_seq: int = 1) -> None:
    """Every seq once, in order, no gaps, exactly one terminal event at the end."""
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(from_seq, from_seq + len(events))), seqs
    terminals = [e for e in events if e["type"] in ("done", "error")]
    assert len(terminals) == 1 and events[-1] is terminals[0], [e["type"] for e in events]
    if from_seq == 1:
        assert events[0]["type"] == "start"
