"""Tokens can't be refreshed forever and can be revoked (issue 11, "tokens refresh forever and can't be
revoked"; docs/security.md, "Conversation lifetime and revocation"), against real servers: the memory
store, Redis, and two instances sharing one Redis."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import httpx
import pytest
import websockets

from api.auth import issue_token, verify_token
from api.exceptions import LimitsUnavailable, Unauthorized
from api.limit_store import MemoryLimitStore, RedisLimitStore
from api.revocations import Revocations
from testkit import T
from testkit.clients import WsClient, negotiate, ws_turn
from testkit.faults import RedisFactory
from testkit.server import SECRET, ServerFactory

pytestmark = pytest.mark.timeout(60)

DEV_KEY = "dev-demo-key-not-secret"  # brands/demo.yaml api.dev_key (the tests run in dev mode)
QUESTION = "How long does shipping take?"
HEARTBEAT_MS = 300


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def payload(token: str) -> dict[str, Any]:
    body = token.split(".", 1)[0]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return result


@pytest.fixture(params=["memory", "redis"])
def buffer_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    return url


async def refresh(http: httpx.AsyncClient, n: dict[str, Any]) -> httpx.Response:
    return await http.post(
        "/v1/negotiate", json={"brand": "demo", "conversation_id": n["conversation_id"], "token": n["token"]}
    )


async def token_routes(http: httpx.AsyncClient, n: dict[str, Any]) -> list[int]:
    """The statuses of every HTTP route that carries the conversation's token."""
    conversation, auth = n["conversation_id"], bearer(n["token"])
    return [
        (await http.get(f"/v1/conversations/{conversation}", headers=auth)).status_code,
        (
            await http.post(
                f"/v1/conversations/{conversation}/messages",
                json={"client_message_id": f"m{time.monotonic_ns()}", "text": QUESTION},
                headers=auth,
            )
        ).status_code,
        (await http.get("/v1/streams/s_any/events", headers=auth)).status_code,
        (await http.get("/v1/streams/s_any/events", params={"token": n["token"]})).status_code,
        (await http.post("/v1/streams/s_any/cancel", headers=auth)).status_code,
    ]


# --- (a) a conversation's age: refreshing keeps its start ----------------------------------------------


async def test_a_refresh_keeps_the_conversations_start_and_past_its_max_age_no_token_is_issued_or_accepted(
    servers: ServerFactory,
) -> None:
    server = await servers(conversation_max_age_s=3, token_ttl_s=60)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
        first = (await http.post("/v1/negotiate", json={"brand": "demo"})).json()
        started = payload(first["token"])["n"]
        assert abs(started - time.time()) < 2
        assert first["expires_in_s"] <= 3, "a token never outlives its conversation"
        await asyncio.sleep(1.1)
        again = await refresh(http, first)
        assert again.status_code == 200, again.text
        assert payload(again.json()["token"])["n"] == started, "the refresh kept the conversation's start"
        assert payload(again.json()["token"])["e"] == started + 3
        assert (
            await http.get(f"/v1/conversations/{first['conversation_id']}", headers=bearer(first["token"]))
        ).is_success
        await asyncio.sleep(max(0.0, started + 3.2 - time.time()))
        late = {**first, "token": again.json()["token"]}
        refused = await refresh(http, late)
        assert refused.status_code == 403, refused.text
        assert await token_routes(http, late) == [401] * 5
    with pytest.raises(websockets.ConnectionClosed) as closed:
        async with WsClient.connect(server.ws_url, late["token"]):
            pass
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


def test_a_token_past_its_conversations_max_age_is_refused_even_before_its_own_expiry() -> None:
    """A lower CONVERSATION_MAX_AGE_S applies to tokens already issued under a higher one."""
    now = 1_000_000.0
    token = issue_token(SECRET.encode(), "c_x", "demo", 3600, now=now, started_at=int(now) - 100, max_age_s=1000)
    assert verify_token(SECRET.encode(), token, now=now, max_age_s=1000).started_at == int(now) - 100
    with pytest.raises(Unauthorized, match="too old"):
        verify_token(SECRET.encode(), token, now=now, max_age_s=100)


async def test_a_token_from_before_the_field_keeps_verifying_until_it_expires_and_refreshes_from_its_issue_time(
    servers: ServerFactory,
) -> None:
    server = await servers(conversation_max_age_s=600, token_ttl_s=60)
    n = await negotiate(server.base_url)
    legacy = issue_token(SECRET.encode(), n["conversation_id"], "demo", 60)  # no "n": signed by the old code
    assert "n" not in payload(legacy)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
        history = await http.get(f"/v1/conversations/{n['conversation_id']}", headers=bearer(legacy))
        assert history.status_code == 200
        again = await refresh(http, {**n, "token": legacy})
    assert again.status_code == 200, again.text
    # Counted as started when that token was issued (its expiry minus TOKEN_TTL_S).
    assert payload(again.json()["token"])["n"] == payload(legacy)["e"] - 60


# --- (b) revocation ---------------------------------------------------------------------------------------


async def test_a_revoked_conversation_is_refused_on_every_route_and_its_open_websocket_closed_within_a_heartbeat(
    servers: ServerFactory, buffer_url: str
) -> None:
    server = await servers(buffer_url=buffer_url, heartbeat_ms=HEARTBEAT_MS, shutdown_grace_s=0.1)
    n = await negotiate(server.base_url)
    other = await negotiate(server.base_url)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
        async with WsClient.connect(server.ws_url, n["token"]) as client:
            revoked = await http.post(f"/v1/conversations/{n['conversation_id']}/revoke", headers=bearer(DEV_KEY))
            assert revoked.status_code == 200, revoked.text
            assert revoked.json() == {"conversation_id": n["conversation_id"], "revoked": True}
            at = time.monotonic()
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await client.recv(timeout=5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
            assert time.monotonic() - at < 2 * HEARTBEAT_MS / 1000 + 0.5 * T
            told = [f for f in client.frames if f["type"] == "error"]
            assert told and told[-1]["code"] == "unauthorized" and "revoked" in told[-1]["message"]
        assert await token_routes(http, n) == [401] * 5
        assert (await refresh(http, n)).status_code == 403
        # Another conversation is untouched.
        assert (
            await http.get(f"/v1/conversations/{other['conversation_id']}", headers=bearer(other["token"]))
        ).is_success
    with pytest.raises(websockets.ConnectionClosed) as at_hello:
        async with WsClient.connect(server.ws_url, n["token"]):
            pass
    assert at_hello.value.rcvd is not None and at_hello.value.rcvd.code == 4401


async def test_revoking_needs_the_brands_key_and_a_key_revokes_only_its_own_brands_conversations(
    servers: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MERIDIAN_BRAND_API_KEY", "meridian-test-key-0123456789")
    server = await servers()
    n = await negotiate(server.base_url)
    url = f"/v1/conversations/{n['conversation_id']}/revoke"
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
        assert (await http.post(url)).status_code == 401
        assert (await http.post(url, headers=bearer("wrong-key"))).status_code == 401
        assert (await http.post(url, headers=bearer(n["token"]))).status_code == 401, "a token is not a key"
        other_brand = await http.post(url, headers=bearer("meridian-test-key-0123456789"))
        assert other_brand.status_code == 200  # idempotent and says nothing about whose the id is …
        history = await http.get(f"/v1/conversations/{n['conversation_id']}", headers=bearer(n["token"]))
        assert history.status_code == 200  # … but it did not touch the demo brand's conversation
        assert (await http.post("/v1/conversations/c%3Ax/revoke", headers=bearer(DEV_KEY))).status_code == 404


async def test_a_revocation_on_one_instance_holds_on_another_through_redis(
    servers: ServerFactory, redis_url: str
) -> None:
    a = await servers(buffer_url=redis_url, heartbeat_ms=HEARTBEAT_MS, shutdown_grace_s=0.1)
    b = await servers(buffer_url=redis_url, heartbeat_ms=HEARTBEAT_MS, shutdown_grace_s=0.1)
    n = await negotiate(a.base_url)
    async with (
        httpx.AsyncClient(base_url=a.base_url, timeout=5 * T) as on_a,
        httpx.AsyncClient(base_url=b.base_url, timeout=5 * T) as on_b,
    ):
        async with WsClient.connect(b.ws_url, n["token"]) as client:
            assert (
                await on_a.post(f"/v1/conversations/{n['conversation_id']}/revoke", headers=bearer(DEV_KEY))
            ).is_success
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await client.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        assert await token_routes(on_b, n) == [401] * 5
        assert (await refresh(on_b, n)).status_code == 403
    ttl = await redis_ttl(redis_url, f"bc:limit:revoked:demo:{n['conversation_id']}")
    assert 0 < ttl <= b.runtime.settings.token_ttl_s + 60, "kept no longer than a token can live"


async def redis_ttl(url: str, key: str) -> int:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    try:
        return int(await client.ttl(key))
    finally:
        await client.aclose()


async def test_while_the_store_is_down_revoking_is_refused_retryably_and_checks_fail_open() -> None:
    class Down(MemoryLimitStore):
        async def mark(self, key: str, ttl_s: float) -> None:
            raise LimitsUnavailable("limits unavailable: ConnectionError")

        async def marked(self, key: str) -> bool:
            raise LimitsUnavailable("limits unavailable: ConnectionError")

    revocations = Revocations(Down(), token_ttl_s=60)
    with pytest.raises(LimitsUnavailable):
        await revocations.revoke("demo", "c_x")
    assert await revocations.is_revoked("demo", "c_x") is False


async def test_a_revocation_check_that_failed_in_an_outage_does_not_hold_back_the_limits_once_redis_is_back(
    redis_servers: RedisFactory,
) -> None:
    """Found by test_redis_outage: a heartbeat's check during the outage opened the shared breaker,
    and a re-send just after Redis returned was refused. The marks have a breaker of their own."""
    proc = redis_servers()
    store = RedisLimitStore(proc.url)
    try:
        assert await store.hit("k", 10, 60) == 0
        proc.kill()
        with pytest.raises(LimitsUnavailable):
            await store.marked("revoked:demo:c_x")
        proc.restart()
        assert await store.hit("k", 10, 60) == 0, "the limits were not held back by the failed check"
        with pytest.raises(LimitsUnavailable, match="a moment ago"):
            await store.marked("revoked:demo:c_x")  # its own breaker: fails fast for a moment
    finally:
        await store.close()


async def test_a_revocation_lasts_as_long_as_a_token_can_and_no_longer() -> None:
    clock = [0.0]
    revocations = Revocations(MemoryLimitStore(clock=lambda: clock[0]), token_ttl_s=100)
    await revocations.revoke("demo", "c_x")
    assert await revocations.is_revoked("demo", "c_x") and not await revocations.is_revoked("meridian", "c_x")
    clock[0] = 159.0
    assert await revocations.is_revoked("demo", "c_x")
    clock[0] = 161.0
    assert not await revocations.is_revoked("demo", "c_x")


async def test_stream_events_cost_no_revocation_lookups_only_the_hello_and_each_heartbeat_do(
    servers: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await servers(heartbeat_ms=60_000, offline_token_delay_ms=5)
    store = server.runtime.revocations.store
    lookups: list[str] = []
    marked = store.marked

    async def counting(key: str) -> bool:
        lookups.append(key)
        return await marked(key)

    monkeypatch.setattr(store, "marked", counting)
    n = await negotiate(server.base_url)
    events = await ws_turn(server.ws_url, n, QUESTION)
    assert len(events) > 10 and events[-1]["type"] == "done"
    assert len(lookups) == 1, "one lookup at hello, none per event"
