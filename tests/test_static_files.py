"""/static is compressed and cacheable with versioned URLs (api/static_files.py), and the streaming
routes are never compressed or buffered: with ``Accept-Encoding: gzip`` every event still leaves the
server on its own, as it happens."""

from __future__ import annotations

import asyncio
import gzip
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit import T
from testkit.clients import negotiate, post_message
from testkit.server import RunningServer, ServerFactory

pytestmark = pytest.mark.timeout(30)

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
KEY = "dev-demo-key-not-secret"
GZIP = {"Accept-Encoding": "gzip"}


def client_version() -> str:
    sys.path.insert(0, str(STATIC_DIR))
    try:
        from build import client_version as version_of  # static/build.py is a script
    finally:
        sys.path.remove(str(STATIC_DIR))
    version: str = version_of((STATIC_DIR / "chat-client.js").read_bytes())
    return version


async def test_the_widget_is_gzipped_and_revalidated_with_its_etag(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
        response = await http.get("/static/widget.js", headers=GZIP)
        again = await http.get("/static/widget.js", headers={**GZIP, "If-None-Match": response.headers["etag"]})
        plain = await http.get("/static/widget.js", headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip" and "accept-encoding" in response.headers["vary"].lower()
    assert int(response.headers["content-length"]) < len(response.content) / 2  # sent compressed
    assert response.content == (STATIC_DIR / "widget.js").read_bytes()  # httpx decompressed it
    assert response.headers["cache-control"] == "no-cache"
    assert again.status_code == 304 and again.content == b""
    assert "content-encoding" not in plain.headers and plain.content == (STATIC_DIR / "widget.js").read_bytes()


async def test_the_client_at_its_versioned_url_is_cached_for_a_year(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
        response = await http.get(f"/static/chat-client.js?v={client_version()}", headers=GZIP)
    assert response.status_code == 200 and response.headers["content-encoding"] == "gzip"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.content == (STATIC_DIR / "chat-client.js").read_bytes()


async def test_gzip_is_decodable_by_anyone_not_only_httpx(server: RunningServer) -> None:
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http,
        http.stream("GET", "/static/widget.js", headers=GZIP) as response,
    ):
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert gzip.decompress(raw) == (STATIC_DIR / "widget.js").read_bytes()


async def arrivals(response: httpx.Response) -> list[tuple[float, bytes]]:
    """Every chunk as it arrived off the socket, with its time."""
    loop = asyncio.get_running_loop()
    return [(loop.time(), chunk) async for chunk in response.aiter_raw()]


async def stream_request(server: RunningServer, route: str) -> tuple[str, str, dict[str, Any], dict[str, str]]:
    if route == "sse":
        negotiated = await negotiate(server.base_url)
        sent = await post_message(server.base_url, negotiated, "How long does shipping take?")
        auth = {"Authorization": f"Bearer {negotiated['token']}"}
        return "GET", f"/v1/streams/{sent.json()['stream_id']}/events", {}, auth
    key = {"Authorization": f"Bearer {KEY}"}
    if route == "chat":
        body = {"model": "demo", "stream": True, "messages": [{"role": "user", "content": "Shipping times?"}]}
        return "POST", "/v1/chat/completions", body, key
    return "POST", "/v1/responses", {"model": "demo", "stream": True, "input": "Shipping times?"}, key


@pytest.mark.parametrize("route", ["sse", "chat", "responses"])
async def test_a_stream_is_neither_compressed_nor_buffered_when_the_client_accepts_gzip(
    servers: ServerFactory, route: str
) -> None:
    server = await servers(offline_token_delay_ms=40)
    method, path, body, headers = await stream_request(server, route)
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=10 * T) as http,
        http.stream(method, path, json=body or None, headers={**headers, **GZIP}) as response,
    ):
        assert response.status_code == 200
        assert "content-encoding" not in response.headers
        assert response.headers["content-type"].startswith("text/event-stream")
        received = await arrivals(response)
    marker = b"event: delta" if route == "sse" else b'"content":' if route == "chat" else b"output_text.delta"
    with_text = [at for at, chunk in received if marker in chunk]
    # Paced at one word per 40 ms, the words arrive in many separate reads spread over time; a
    # compressor or buffer in the way would deliver them in one lump at the end.
    assert len(with_text) >= 5, f"{len(with_text)} reads carried text: the stream was buffered"
    assert with_text[-1] - with_text[0] >= 0.1
