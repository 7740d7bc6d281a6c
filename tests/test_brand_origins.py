"""A brand's chat works only from the origins its brand file allows (``allowed_origins``)."""

from __future__ import annotations

import httpx
import pytest
import websockets

from testkit.clients import WsClient, negotiate
from testkit.server import RunningServer

ALLOWED = "https://www.meridian.example"  # brands/meridian.yaml


async def test_negotiate_refuses_a_page_on_an_origin_the_brand_does_not_allow(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, verify=False) as http:
        refused = await http.post(
            "/v1/negotiate", json={"brand": "meridian"}, headers={"Origin": "https://evil.example"}
        )
        allowed = await http.post("/v1/negotiate", json={"brand": "meridian"}, headers={"Origin": ALLOWED})
        any_site = await http.post("/v1/negotiate", json={"brand": "demo"}, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403 and "origin" in refused.json()["error"]["message"]
    assert allowed.status_code == 200
    assert any_site.status_code == 200  # demo allows every origin (allowed_origins: [])


async def test_a_websocket_from_another_origin_cannot_use_a_brands_token(server: RunningServer) -> None:
    n = await negotiate(server.base_url, brand="meridian")  # no Origin: a server-side caller
    async with WsClient.connect(server.ws_url, origin=ALLOWED) as client:
        await client.send({"type": "hello", "token": n["token"]})
        assert (await client.recv())["type"] == "welcome"
    async with WsClient.connect(server.ws_url, origin="https://evil.example") as client:
        await client.send({"type": "hello", "token": n["token"]})
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await client.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
