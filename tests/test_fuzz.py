"""Fuzzing against a real server (issue 11): property-based WebSocket frames and requests to every
HTTP route of the app's own OpenAPI schema. Whatever arrives: no 500, no internal close (1011), no
hang, and the server is still healthy afterwards.

``make test`` runs a short pass (``FUZZ_EXAMPLES``, 25 by default); ``make fuzz`` a long one.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import httpx
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testkit import T
from testkit.clients import negotiate
from testkit.server import RunningServer

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
pytestmark = pytest.mark.timeout(max(120, EXAMPLES))

# Values that tend to break parsers: odd types, huge and tiny numbers, control and non-ASCII text.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.sampled_from(["", "\x00", "é" * 10, "💥", "../../etc/passwd", "<script>", "a" * 5000, "-1", "1e309"]),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
FRAME_TYPES = st.sampled_from(["hello", "send", "resume", "cancel", "ping", "pong", "welcome", "", "x"])
FIELDS = st.fixed_dictionaries(
    {"type": FRAME_TYPES},
    optional={
        "token": SCALARS,
        "client_message_id": SCALARS,
        "text": SCALARS,
        "stream_id": SCALARS,
        "after_seq": SCALARS,
        "extra": JSON,
    },
)
RAW_FRAME = st.one_of(
    FIELDS.map(json.dumps),
    JSON.map(json.dumps),
    st.text(max_size=200),
    st.binary(max_size=200),
)


async def recv_until_quiet(ws: Any, quiet_s: float) -> list[Any]:
    got = []
    while True:
        try:
            async with asyncio.timeout(quiet_s):
                got.append(await ws.recv())
        except TimeoutError:
            return got


@FUZZ
@given(frames=st.lists(RAW_FRAME, min_size=1, max_size=8), hello_first=st.booleans())
async def test_websocket_frames_of_any_shape_never_break_the_server(
    server: RunningServer, frames: list[str | bytes], hello_first: bool
) -> None:
    n = await negotiate(server.base_url)
    async with websockets.connect(server.ws_url, open_timeout=5 * T) as ws:
        if hello_first:
            await ws.send(json.dumps({"type": "hello", "token": n["token"]}))
        try:
            for frame in frames:
                await ws.send(frame)
            await recv_until_quiet(ws, 0.2 * T)
        except websockets.ConnectionClosed:
            pass
        if ws.close_code is not None:
            assert ws.close_code != 1011, ws.close_reason
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
        assert (await http.get("/healthz")).status_code == 200


def _routes(server: RunningServer) -> list[tuple[str, str]]:
    schema = server.app.openapi()
    return [
        (method.upper(), path) for path, item in schema["paths"].items() for method in item if method in ("get", "post")
    ]


PATH_PARAMS = st.sampled_from(["c_x", "s_x", "", "%00", "..", "é", "a" * 300, "c_" + "A" * 22])
HEADERS = st.dictionaries(
    st.sampled_from(["authorization", "origin", "last-event-id", "x-forwarded-for", "content-type"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=60).map(str.strip),
    max_size=3,
)


@FUZZ
@given(data=st.data())
async def test_requests_of_any_shape_to_every_route_get_a_4xx_or_a_success_never_a_500(
    server: RunningServer, data: st.DataObject
) -> None:
    method, path = data.draw(st.sampled_from(_routes(server)))
    for name in ("conversation_id", "stream_id"):
        path = path.replace("{" + name + "}", data.draw(PATH_PARAMS))
    headers = {k: v.encode("latin-1") for k, v in data.draw(HEADERS).items() if v}
    body = data.draw(st.one_of(JSON.map(json.dumps), st.binary(max_size=300).map(bytes.hex), st.just("")))
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
        try:
            response = await http.request(method, path, content=body if method == "POST" else None, headers=headers)
        except httpx.LocalProtocolError:
            return  # httpx refused to send it (e.g. an illegal header): nothing reached the server
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            await response.aclose()
        assert response.status_code < 500 or response.status_code == 503, (method, path, response.text[:300])
        assert (await http.get("/healthz")).status_code == 200
