"""Limits with clear answers (issue 11, item 1; docs/security.md): against real servers, over HTTP and
the WebSocket, in process (memory://) and across instances (Redis).

Finding pinned: "30 parallel sends on one conversation all started a reply; 120 replies from one
address in seconds, all started; one WebSocket ran 38 at once; one API key 20."
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest
import websockets

from api.limit_store import LimitStore, MemoryLimitStore, RedisLimitStore, ReplyCheck
from api.limits import client_address, parse_networks
from api.settings import Settings
from testkit import T
from testkit.clients import WsClient, negotiate, post_message, read_sse
from testkit.processes import RedisProcess
from testkit.server import RunningServer, ServerFactory

pytestmark = pytest.mark.timeout(60)

QUESTION = "How long does shipping take?"
# A reply of the offline provider at this pace runs for seconds: long enough to be "running".
SLOW_MS = 150
# Servers with replies still running at the end of a test stop without waiting for them.
QUICK_STOP = {"shutdown_grace_s": 0.1}
# The shipped defaults, not the relaxed ones of testkit's TEST_DEFAULTS.
STRICT = {
    name: Settings.model_fields[name].default
    for name in ("rate_replies_per_min", "rate_negotiates_per_min", "max_connections_per_address")
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    error = error_of(response)
    assert error["code"] == "rate_limited" and error["message"]
    assert error["retry_after_ms"] > 0
    assert int(response.headers["retry-after"]) >= 1
    assert int(response.headers["retry-after"]) * 1000 >= error["retry_after_ms"]


@pytest.fixture(params=["memory", "redis"])
def buffer_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    return url


# --- running replies per conversation ---------------------------------------------------------------


async def test_thirty_parallel_sends_on_one_conversation_start_one_reply_the_rest_are_conversation_busy(
    servers: ServerFactory, buffer_url: str
) -> None:
    server = await servers(buffer_url=buffer_url, offline_token_delay_ms=SLOW_MS, **QUICK_STOP)
    n = await negotiate(server.base_url)
    responses = await asyncio.gather(*(post_message(server.base_url, n, QUESTION, cmid=f"m{i}") for i in range(30)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202] + [409] * 29, statuses
    busy = next(r for r in responses if r.status_code == 409)
    assert error_of(busy)["code"] == "conversation_busy"
    assert server.runtime.manager.running == 1


async def test_a_resent_message_is_never_busy_it_gets_the_stream_it_started(servers: ServerFactory) -> None:
    server = await servers(offline_token_delay_ms=SLOW_MS, **QUICK_STOP)
    n = await negotiate(server.base_url)
    first = await post_message(server.base_url, n, QUESTION, cmid="m1")
    again = await post_message(server.base_url, n, QUESTION, cmid="m1")
    assert first.status_code == again.status_code == 202
    assert again.json()["stream_id"] == first.json()["stream_id"]


async def test_the_conversation_takes_the_next_message_once_its_reply_ended(server: RunningServer) -> None:
    n = await negotiate(server.base_url)
    for i in range(3):
        response = await post_message(server.base_url, n, QUESTION, cmid=f"m{i}")
        assert response.status_code == 202, response.text
        reader = await read_sse(server.base_url, response.json()["stream_id"], n["token"])
        assert reader.events[-1].event == "done"
        # The place is given back just before the terminal event is written (Limits.end_stream).
        async with asyncio.timeout(2 * T):
            while server.runtime.limits._by_stream:
                await asyncio.sleep(0.01)


async def test_a_message_sent_the_moment_done_arrives_is_never_busy(servers: ServerFactory, buffer_url: str) -> None:
    """The conversation's place is given back *before* the terminal event is written, so a client that
    sends its next message as soon as it reads ``done`` is accepted, however slow the limits' store.
    (The store is slowed here by 0.3 s per unclaim: given back after ``done``, every send would be 409.)"""
    server = await servers(buffer_url=buffer_url)
    store = server.runtime.limits.store
    unclaim = store.unclaim

    async def slow_unclaim(key: str, value: str) -> None:
        await asyncio.sleep(0.3 * T)
        await unclaim(key, value)

    store.unclaim = slow_unclaim  # type: ignore[method-assign]
    n = await negotiate(server.base_url)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        for i in range(3):
            await client.send({"type": "send", "client_message_id": f"m{i}", "text": QUESTION})
            frame = (await client.recv_until(lambda f: f["type"] in ("done", "error")))[-1]
            assert frame["type"] == "done", frame


async def test_a_websocket_gets_conversation_busy_with_the_client_message_id_for_a_second_send(
    servers: ServerFactory,
) -> None:
    server = await servers(offline_token_delay_ms=SLOW_MS, **QUICK_STOP)
    n = await negotiate(server.base_url)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        for i in range(5):
            await client.send({"type": "send", "client_message_id": f"m{i}", "text": QUESTION})
        answers = ("accepted", "error")
        frames = await client.recv_until(
            lambda _: len([x for x in client.frames if x["type"] in answers and "seq" not in x]) >= 5
        )
    refusals = [f for f in frames if f["type"] == "error" and "seq" not in f]
    accepted = [f for f in frames if f["type"] == "accepted"]
    assert len(accepted) == 1 and accepted[0]["client_message_id"] == "m0"
    assert [f["code"] for f in refusals] == ["conversation_busy"] * 4
    assert sorted(f["client_message_id"] for f in refusals) == ["m1", "m2", "m3", "m4"]
    assert server.runtime.manager.running == 1


async def test_a_conversation_is_busy_across_instances_through_redis(servers: ServerFactory, redis_url: str) -> None:
    a = await servers(buffer_url=redis_url, offline_token_delay_ms=SLOW_MS, **QUICK_STOP)
    b = await servers(buffer_url=redis_url, offline_token_delay_ms=SLOW_MS, **QUICK_STOP)
    n = await negotiate(a.base_url)
    first = await post_message(a.base_url, n, QUESTION, cmid="m1")
    second = await post_message(b.base_url, n, QUESTION, cmid="m2")
    assert first.status_code == 202 and second.status_code == 409, second.text


# --- per address ----------------------------------------------------------------------------------


async def test_replies_per_address_per_minute_answer_429_with_retry_after_over_http(
    servers: ServerFactory, buffer_url: str
) -> None:
    server = await servers(buffer_url=buffer_url, **{**STRICT, "rate_replies_per_min": 3})
    responses = []
    for _ in range(4):
        n = await negotiate(server.base_url)
        responses.append(await post_message(server.base_url, n, QUESTION))
    assert [r.status_code for r in responses[:3]] == [202, 202, 202]
    assert_rate_limited(responses[3])


async def test_a_rate_limited_websocket_send_is_an_error_frame_with_retry_after_ms_and_the_client_message_id(
    servers: ServerFactory,
) -> None:
    server = await servers(**{**STRICT, "rate_replies_per_min": 1})
    n1, n2 = await negotiate(server.base_url), await negotiate(server.base_url)
    async with WsClient.connect(server.ws_url, n1["token"]) as client:
        await client.send({"type": "send", "client_message_id": "m1", "text": QUESTION})
        assert (await client.recv())["type"] == "accepted"
    async with WsClient.connect(server.ws_url, n2["token"]) as client:
        await client.send({"type": "send", "client_message_id": "m2", "text": QUESTION})
        refusal = await client.recv()
    assert refusal["type"] == "error" and refusal["code"] == "rate_limited"
    assert refusal["client_message_id"] == "m2" and refusal["retry_after_ms"] > 0 and refusal["retryable"] is True


async def test_negotiates_per_address_per_minute_hold_across_instances_through_redis(
    servers: ServerFactory, redis_url: str
) -> None:
    a = await servers(buffer_url=redis_url, **{**STRICT, "rate_negotiates_per_min": 2})
    b = await servers(buffer_url=redis_url, **{**STRICT, "rate_negotiates_per_min": 2})
    async with httpx.AsyncClient(timeout=5 * T) as http:
        ok_a = await http.post(f"{a.base_url}/v1/negotiate", json={"brand": "demo"})
        ok_b = await http.post(f"{b.base_url}/v1/negotiate", json={"brand": "demo"})
        third = await http.post(f"{a.base_url}/v1/negotiate", json={"brand": "demo"})
    assert ok_a.status_code == ok_b.status_code == 200
    assert_rate_limited(third)


async def test_open_connections_per_address_are_capped_on_websocket_and_sse(servers: ServerFactory) -> None:
    server = await servers(offline_token_delay_ms=SLOW_MS, **QUICK_STOP, **{**STRICT, "max_connections_per_address": 2})
    n = await negotiate(server.base_url)
    async with WsClient.connect(server.ws_url, n["token"]), WsClient.connect(server.ws_url, n["token"]):
        async with WsClient.connect(server.ws_url) as third:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await third.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429
        stream_id = (await post_message(server.base_url, n, QUESTION)).json()["stream_id"]
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
            events = await http.get(f"/v1/streams/{stream_id}/events", headers=bearer(n["token"]))
        assert_rate_limited(events)
    # Closed connections give their places back.
    async with asyncio.timeout(2 * T):
        while True:
            try:
                async with WsClient.connect(server.ws_url, n["token"]):
                    break
            except (websockets.ConnectionClosed, AssertionError):
                await asyncio.sleep(0.05)


# --- per brand and per instance -------------------------------------------------------------------


async def test_running_replies_per_brand_hold_across_instances_and_free_up_when_replies_end(
    servers: ServerFactory, redis_url: str
) -> None:
    settings = {
        "buffer_url": redis_url,
        "offline_token_delay_ms": SLOW_MS,
        "max_running_replies_per_brand": 2,
        **QUICK_STOP,
    }
    a, b = await servers(**settings), await servers(**settings)
    ns = [await negotiate(a.base_url) for _ in range(4)]
    r1 = await post_message(a.base_url, ns[0], QUESTION)
    r2 = await post_message(b.base_url, ns[1], QUESTION)
    r3 = await post_message(a.base_url, ns[2], QUESTION)
    other_brand = await negotiate(b.base_url, brand="fallback-demo")
    r4 = await post_message(b.base_url, other_brand, QUESTION)
    assert (r1.status_code, r2.status_code, r4.status_code) == (202, 202, 202)
    assert_rate_limited(r3)
    async with httpx.AsyncClient(base_url=a.base_url, timeout=5 * T) as http:
        await http.post(f"/v1/streams/{r1.json()['stream_id']}/cancel", headers=bearer(ns[0]["token"]))
    async with asyncio.timeout(5 * T):
        while (await post_message(a.base_url, ns[3], QUESTION)).status_code != 202:
            await asyncio.sleep(0.05)


async def test_running_replies_per_instance_are_capped(servers: ServerFactory) -> None:
    server = await servers(offline_token_delay_ms=SLOW_MS, max_running_replies=1, **QUICK_STOP)
    n1, n2 = await negotiate(server.base_url), await negotiate(server.base_url)
    assert (await post_message(server.base_url, n1, QUESTION)).status_code == 202
    assert_rate_limited(await post_message(server.base_url, n2, QUESTION))


async def test_the_openai_compatible_endpoint_answers_429_with_retry_after_past_the_address_rate(
    servers: ServerFactory,
) -> None:
    server = await servers(**{**STRICT, "rate_replies_per_min": 2})
    async with openai.AsyncOpenAI(
        api_key="dev-demo-key-not-secret", base_url=f"{server.base_url}/v1", max_retries=0, timeout=10 * T
    ) as client:
        for _ in range(2):
            await client.chat.completions.create(model="demo", messages=[{"role": "user", "content": QUESTION}])
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(model="demo", messages=[{"role": "user", "content": QUESTION}])
    assert refused.value.code == "rate_limit_exceeded"
    assert int(refused.value.response.headers["retry-after"]) >= 1


async def test_one_api_key_runs_at_most_the_brands_running_replies_at_once(servers: ServerFactory) -> None:
    # Before: one API key ran 20 replies at once.
    server = await servers(offline_token_delay_ms=SLOW_MS, max_running_replies_per_brand=5, **QUICK_STOP)

    async def one(client: openai.AsyncOpenAI) -> str:
        try:
            stream = await client.chat.completions.create(
                model="demo", messages=[{"role": "user", "content": QUESTION}], stream=True
            )
            await stream.__anext__()  # the reply is running
            await asyncio.sleep(1.0)  # … and stays running while the others try
            await stream.close()
            return "ran"
        except openai.RateLimitError:
            return "429"

    async with openai.AsyncOpenAI(
        api_key="dev-demo-key-not-secret", base_url=f"{server.base_url}/v1", max_retries=0, timeout=10 * T
    ) as client:
        outcomes = await asyncio.gather(*(one(client) for _ in range(20)))
    assert sorted(outcomes) == ["429"] * 15 + ["ran"] * 5


async def test_with_the_limits_redis_down_a_send_is_refused_as_retryable_never_a_500_or_1011(
    servers: ServerFactory,
) -> None:
    redis = RedisProcess()
    await asyncio.to_thread(redis.start)
    try:
        server = await servers(buffer_url=redis.url)
        n = await negotiate(server.base_url)
        async with WsClient.connect(server.ws_url, n["token"]) as client:
            await asyncio.to_thread(redis.stop)
            await client.send({"type": "send", "client_message_id": "m1", "text": QUESTION})
            refusal = await client.recv(timeout=10)
            await client.send({"type": "ping"})
            assert (await client.recv())["type"] == "pong", "the connection stays open"
        sse = await post_message(server.base_url, n, QUESTION, cmid="m2")
        # A new connection is let in uncounted (it may be a client coming back to the instance that
        # produces its reply, which serves it from memory); its sends are refused the same way.
        async with WsClient.connect(server.ws_url, n["token"]) as late:
            await late.send({"type": "send", "client_message_id": "m3", "text": QUESTION})
            late_refusal = await late.recv(timeout=10)
    finally:
        await asyncio.to_thread(redis.stop)
    assert refusal["type"] == "error" and refusal["code"] == "buffer_unavailable"
    assert refusal["retryable"] is True and refusal["client_message_id"] == "m1"
    assert sse.status_code == 503 and error_of(sse)["code"] == "buffer_unavailable"
    assert late_refusal["code"] == "buffer_unavailable" and late_refusal["client_message_id"] == "m3"


# --- the client address ---------------------------------------------------------------------------


async def test_x_forwarded_for_from_an_untrusted_peer_buys_no_extra_budget(servers: ServerFactory) -> None:
    server = await servers(**{**STRICT, "rate_negotiates_per_min": 2})
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
        statuses = [
            (
                await http.post("/v1/negotiate", json={"brand": "demo"}, headers={"X-Forwarded-For": f"198.51.100.{i}"})
            ).status_code
            for i in range(3)
        ]
    assert statuses == [200, 200, 429]


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget(servers: ServerFactory) -> None:
    server = await servers(trusted_proxies="127.0.0.1", **{**STRICT, "rate_negotiates_per_min": 1})
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:

        async def from_(chain: str) -> int:
            response = await http.post("/v1/negotiate", json={"brand": "demo"}, headers={"X-Forwarded-For": chain})
            return response.status_code

        assert await from_("198.51.100.1") == 200
        assert await from_("198.51.100.2") == 200
        # A client cannot pose as someone else by writing the left of the chain itself.
        assert await from_("203.0.113.7, 198.51.100.1") == 429


def test_client_address_trusts_x_forwarded_for_only_from_trusted_proxies() -> None:
    trusted = parse_networks(["10.0.0.0/8", "127.0.0.1"])
    xff = {"x-forwarded-for": "1.2.3.4, 203.0.113.9, 10.1.2.3"}
    assert client_address("192.0.2.5", xff, trusted) == "192.0.2.5"  # peer is not a proxy
    assert client_address("127.0.0.1", xff, trusted) == "203.0.113.9"  # right-most untrusted hop
    assert client_address("127.0.0.1", {"x-forwarded-for": "not-an-ip"}, trusted) == "127.0.0.1"
    assert client_address("127.0.0.1", {}, trusted) == "127.0.0.1"
    assert client_address("2001:db8:1:2:3:4:5:6", {}, ()) == "2001:db8:1:2::/64"
    assert client_address("::ffff:192.0.2.1", {}, ()) == "192.0.2.1"
    assert client_address(None, {}, ()) == "unknown"


# --- the stores -------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_the_rate_allows_a_burst_of_limit_then_refills_one_per_interval() -> None:
    clock = FakeClock()
    store = MemoryLimitStore(clock)
    assert [await store.hit("k", 3, 60) for _ in range(3)] == [0, 0, 0]
    wait = await store.hit("k", 3, 60)
    assert 19_000 <= wait <= 20_000  # one place refills every 60 / 3 s
    clock.now += wait / 1000
    assert await store.hit("k", 3, 60) == 0
    assert await store.hit("k", 3, 60) > 0


async def test_a_rate_of_one_allows_the_first_hit_whatever_the_clock_reads() -> None:
    """(2020.276103 + 60) - 60 rounds above 2020.276103: the first hit of a limit of 1 was refused."""
    clock = FakeClock()
    clock.now = 2020.276103
    store = MemoryLimitStore(clock)
    assert await store.hit("k", 1, 60) == 0
    assert await store.hit("k", 1, 60) > 0


async def test_a_held_place_whose_holder_died_comes_back_when_its_lease_ends() -> None:
    clock = FakeClock()
    store = MemoryLimitStore(clock)
    assert await store.acquire("brand", "a", 1, lease_s=10)
    assert not await store.acquire("brand", "b", 1, lease_s=10)
    clock.now += 11
    assert await store.acquire("brand", "b", 1, lease_s=10)
    assert await store.claim("conv", "m1", 10) is None
    assert await store.claim("conv", "m2", 10) == "m1"
    await store.unclaim("conv", "m2")  # not the holder: nothing happens
    assert await store.claim("conv", "m2", 10) == "m1"
    await store.unclaim("conv", "m1")
    assert await store.claim("conv", "m2", 10) is None


async def test_the_redis_store_keeps_the_same_rules_with_ttls_on_every_key(redis_url: str) -> None:
    store = RedisLimitStore(redis_url)
    try:
        assert [await store.hit("r", 2, 60) for _ in range(2)] == [0, 0]
        assert 29_000 <= await store.hit("r", 2, 60) <= 30_000
        assert await store.acquire("s", "a", 1, 30) and await store.acquire("s", "a", 1, 30)  # re-entrant
        assert not await store.acquire("s", "b", 1, 30)
        await store.release("s", "a")
        assert await store.acquire("s", "b", 1, 30)
        assert await store.claim("c", "m1", 30) is None and await store.claim("c", "m2", 30) == "m1"
        await store.unclaim("c", "m1")
        assert await store.claim("c", "m2", 30) is None
        raw = store._redis
        keys = await raw.keys("bc:limit:*")
        assert keys and all([await raw.pttl(k) > 0 for k in keys])
    finally:
        await store.close()


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_a_replys_places_are_taken_in_one_step_and_a_refusal_holds_nothing(kind: str, redis_url: str) -> None:
    """``begin``: the conversation's claim, the address's rate, then the brand's place, as one step (one
    Redis call); whatever refuses it, nothing stays held. ``give_back`` returns place and claim at once."""
    store: LimitStore = MemoryLimitStore() if kind == "memory" else RedisLimitStore(redis_url)

    def check(cmid: str, member: str, *, rate: str = "r", busy: bool = False, conv: str | None = "conv") -> ReplyCheck:
        return ReplyCheck(conv, cmid, 30, rate, 2, 60, busy, "brand", member, 1, 30)

    try:
        assert await store.begin(check("m1", "a")) == ("ok", None)
        assert await store.begin(check("m2", "b")) == ("claimed", "m1")  # the conversation is busy
        assert await store.begin(check("m2", "b", conv="other")) == ("full", None)  # the brand's one place
        assert await store.claim("other", "m9", 30) is None, "a refusal lets go of the claim it made"
        status, wait_ms = await store.begin(check("m3", "c", conv="third"))
        assert status == "rate" and isinstance(wait_ms, int) and wait_ms > 0  # the address's 2 per minute
        assert await store.claim("third", "m9", 30) is None
        await store.give_back(("brand", "a"), ("conv", "m1"))
        assert await store.claim("conv", "m2", 30) is None, "the claim was given back"
        assert await store.begin(check("m4", "d", rate="r2", busy=True, conv="fourth")) == ("busy", None)
        assert await store.claim("fourth", "m9", 30) is None
        assert await store.begin(check("m5", "e", rate="r2", conv=None)) == ("ok", None)  # the place was given back
        await store.give_back(None, None)
    finally:
        await store.close()
