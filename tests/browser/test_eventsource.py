"""A standard browser EventSource that nobody closes stops reconnecting (PROTOCOL §9).

Regression: after `done` an EventSource reconnects with Last-Event-ID = the terminal seq and was
held open for RESUME_WINDOW_S; on an expired stream it came back once a second for as long as the
tab was open. Now the reconnect at the end gets 204 (the EventSource closes for good) and an
expired stream tells it to wait a day."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from testkit import T
from testkit.clients import WsClient, negotiate
from testkit.server import ServerFactory
from tests.browser.helpers import DESKTOP

pytestmark = pytest.mark.asyncio(loop_scope="module")  # the module shares one browser

QUIET_S = 3.0  # three times the EventSource retry (1 s): a loop would show several requests


async def open_eventsource(browser: Any, base_url: str, path: str) -> tuple[Any, list[str]]:
    """A page of the server's origin with one EventSource on ``path``; the events requests it made."""
    context = await browser.new_context(viewport=DESKTOP)
    page = await context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/events" in r.url else None)
    await page.goto(f"{base_url}/static/blank.html")
    await page.evaluate("(path) => { window.es = new EventSource(path); }", path)
    return page, requests


async def wait_for(predicate: Any, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s * T):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_an_eventsource_left_open_after_done_reconnects_once_gets_204_and_stops(
    browser: Any, servers: ServerFactory, static_dir: Path
) -> None:
    server = await servers(static_dir=static_dir)
    n = await negotiate(server.base_url)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        await client.send({"type": "send", "client_message_id": "m1", "text": "How long does delivery take?"})
        stream_id = (await client.recv_until(lambda f: f["type"] == "accepted"))[-1]["stream_id"]
        await client.stream(stream_id)
    page, requests = await open_eventsource(
        browser, server.base_url, f"/v1/streams/{stream_id}/events?token={n['token']}"
    )
    try:
        await wait_for(lambda: len(requests) >= 2, timeout_s=10)
        await asyncio.sleep(QUIET_S * T)
        assert len(requests) == 2, requests
        assert await page.evaluate("window.es.readyState") == 2  # CLOSED: it will not come back
    finally:
        await page.context.close()


async def test_an_eventsource_on_an_expired_stream_does_not_reconnect_in_a_loop(
    browser: Any, servers: ServerFactory, static_dir: Path
) -> None:
    server = await servers(static_dir=static_dir)
    n = await negotiate(server.base_url)
    page, requests = await open_eventsource(browser, server.base_url, f"/v1/streams/s_gone/events?token={n['token']}")
    try:
        await wait_for(lambda: len(requests) >= 1, timeout_s=10)
        await asyncio.sleep(QUIET_S * T)
        assert len(requests) == 1, requests
    finally:
        await page.context.close()
