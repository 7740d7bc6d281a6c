"""docs/protocol.md §2, §5, §6 and §8 over plain HTTP (httpx) against a real server.

Negotiate, the SSE fallback (send, follow, resume, cancel), history and the health probes.
Every wait is bounded by a deadline in the scaled unit ``T``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from api.auth import issue_token, verify_token
from persona.demo import compose_answer
from testkit import T
from testkit.clients import assert_well_formed, joined_text, read_sse
from testkit.processes import RedisProcess
from testkit.server import SECRET, RunningServer, ServerFactory

QUESTION = "How long does shipping take?"
UNKNOWN_STREAM = "s_AAAAAAAAAAAAAAAAAAAAAA"
# A prefix, then at least 22 URL-safe base64 characters: >= 132 bits.
RANDOM_ID = re.compile(r"^(?P<prefix>[a-z])_[A-Za-z0-9_-]{22,}$")


# --- helpers ----------------------------------------------------------------------------------------


def http_client(server: RunningServer) -> httpx.AsyncClient:
    # Plain HTTP to 127.0.0.1: skipping the CA bundle load saves ~50 ms per client.
    return httpx.AsyncClient(base_url=server.base_url, timeout=5 * T, verify=False)


async def negotiate(server: RunningServer, brand: str = "demo", **extra: Any) -> dict[str, Any]:
    """``testkit.clients.negotiate`` over :func:`http_client`."""
    async with http_client(server) as http:
        response = await http.post("/v1/negotiate", json={"brand": brand, **extra})
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post_message(
    server: RunningServer,
    negotiated: dict[str, Any],
    client_message_id: str = "m1",
    text: str = QUESTION,
    *,
    headers: dict[str, str] | None = None,
    json: Any = None,
) -> httpx.Response:
    async with http_client(server) as http:
        return await http.post(
            f"/v1/conversations/{negotiated['conversation_id']}/messages",
            json=json if json is not None else {"client_message_id": client_message_id, "text": text},
            headers=bearer(negotiated["token"]) if headers is None else headers,
        )


async def send(server: RunningServer, negotiated: dict[str, Any], client_message_id: str = "m1", **kw: Any) -> str:
    response = await post_message(server, negotiated, client_message_id, **kw)
    assert response.status_code == 202, response.text
    stream_id: str = response.json()["stream_id"]
    return stream_id


async def sse_events(server: RunningServer, stream_id: str, token: str, **kw: Any) -> list[dict[str, Any]]:
    reader = await read_sse(server.base_url, stream_id, token, **kw)
    assert reader.status == 200, reader.events
    assert [e.id for e in reader.events] == [e.data["seq"] for e in reader.events]
    assert [e.event for e in reader.events] == [e.data["type"] for e in reader.events]
    return [e.data for e in reader.events]


async def get_history(server: RunningServer, negotiated: dict[str, Any]) -> list[dict[str, Any]]:
    async with http_client(server) as http:
        response = await http.get(
            f"/v1/conversations/{negotiated['conversation_id']}", headers=bearer(negotiated["token"])
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["conversation_id"] == negotiated["conversation_id"]
    turns: list[dict[str, Any]] = body["turns"]
    return turns


def error_of(response: httpx.Response) -> dict[str, str]:
    error: dict[str, str] = response.json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"]
    return error


# --- §2 negotiate -----------------------------------------------------------------------------------


async def test_negotiate_returns_the_documented_shape_with_websocket_preferred_over_sse(server: RunningServer) -> None:
    async with http_client(server) as http:
        response = await http.post("/v1/negotiate", json={"brand": "demo"})
    assert response.status_code == 200
    body = response.json()
    cid = body["conversation_id"]
    assert RANDOM_ID.match(cid) and cid.startswith("c_")
    assert body["transports"] == [
        {"transport": "websocket", "url": "/v1/ws"},
        {"transport": "sse", "url": f"/v1/conversations/{cid}/messages"},
    ]
    assert body["heartbeat_ms"] == server.settings.heartbeat_ms == 15_000
    assert body["resume_window_s"] == server.settings.resume_window_s
    assert body["expires_in_s"] == server.settings.token_ttl_s
    grant = verify_token(SECRET.encode(), body["token"])
    assert (grant.conversation_id, grant.brand) == (cid, "demo")
    assert abs(grant.expires_at - (time.time() + body["expires_in_s"])) < 5


async def test_negotiate_ids_and_tokens_are_long_random_and_never_repeat(server: RunningServer) -> None:
    async with http_client(server) as http:
        responses = await asyncio.gather(*(http.post("/v1/negotiate", json={"brand": "demo"}) for _ in range(100)))
    bodies = [r.json() for r in responses]
    ids = [b["conversation_id"] for b in bodies]
    tokens = [b["token"] for b in bodies]
    assert all(RANDOM_ID.match(i) for i in ids), ids[:3]
    assert len(set(ids)) == len(ids) == 100
    assert len(set(tokens)) == len(tokens) == 100
    # No shared long prefix after "c_": the randomness is spread over the whole id.
    assert len({i[2:6] for i in ids}) > 90


@pytest.mark.parametrize(
    ("failed", "order"),
    [
        (["websocket"], ["sse", "websocket"]),
        (["sse"], ["websocket", "sse"]),
        (["carrier-pigeon"], ["websocket", "sse"]),
        ([], ["websocket", "sse"]),
    ],
)
async def test_negotiate_puts_transports_the_client_reports_as_failed_last(
    server: RunningServer, failed: list[str], order: list[str]
) -> None:
    body = await negotiate(server, failed=failed)
    assert [t["transport"] for t in body["transports"]] == order
    urls = {t["transport"]: t["url"] for t in body["transports"]}
    assert urls == {"websocket": "/v1/ws", "sse": f"/v1/conversations/{body['conversation_id']}/messages"}


async def test_negotiate_for_an_unknown_brand_is_404(server: RunningServer) -> None:
    async with http_client(server) as http:
        response = await http.post("/v1/negotiate", json={"brand": "no-such-brand"})
    assert response.status_code == 404
    assert "no-such-brand" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("content", "names"),
    [
        (b"{brand: demo", "JSON"),
        (b"", "body"),
        (b"[]", "body"),
        (b"{}", "brand"),
        (b'{"brand": 5}', "brand"),
        (b'{"brand": ""}', "brand"),
        (b'{"brand": "demo", "failed": "websocket"}', "failed"),
        (b'{"brand": "demo", "conversation_id": 7, "token": "x"}', "conversation_id"),
        (b'{"brand": "demo", "colour": "red"}', "colour"),
    ],
    ids=[
        "not-json",
        "empty",
        "json-array",
        "missing-brand",
        "brand-not-a-string",
        "brand-empty",
        "failed-not-a-list",
        "conversation-id-not-a-string",
        "unknown-field",
    ],
)
async def test_a_malformed_negotiate_body_is_422_with_a_message_naming_the_problem(
    server: RunningServer, content: bytes, names: str
) -> None:
    async with http_client(server) as http:
        response = await http.post("/v1/negotiate", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "bad_request"
    assert names in error["message"], error["message"]


async def test_continuing_a_conversation_with_its_own_token_keeps_the_conversation(server: RunningServer) -> None:
    first = await negotiate(server)
    again = await negotiate(server, conversation_id=first["conversation_id"], token=first["token"])
    assert again["conversation_id"] == first["conversation_id"]
    assert verify_token(SECRET.encode(), again["token"]).conversation_id == first["conversation_id"]


CONTINUE_WITHOUT_VALID_TOKEN: list[tuple[str, Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]]] = [
    ("no-token", lambda own, other: {"brand": "demo", "conversation_id": own["conversation_id"]}),
    ("empty-token", lambda own, other: {"brand": "demo", "conversation_id": own["conversation_id"], "token": ""}),
    (
        "forged-token",
        lambda own, other: {
            "brand": "demo",
            "conversation_id": own["conversation_id"],
            "token": issue_token(b"not-the-server-secret", own["conversation_id"], "demo", 3600),
        },
    ),
    (
        "expired-token",
        lambda own, other: {
            "brand": "demo",
            "conversation_id": own["conversation_id"],
            "token": issue_token(SECRET.encode(), own["conversation_id"], "demo", -60),
        },
    ),
    (
        "another-conversations-token",
        lambda own, other: {"brand": "demo", "conversation_id": own["conversation_id"], "token": other["token"]},
    ),
    (
        "own-token-under-another-brand",
        lambda own, other: {"brand": "fallback-demo", "conversation_id": own["conversation_id"], "token": own["token"]},
    ),
]


@pytest.mark.parametrize(
    "make_body", [m for _, m in CONTINUE_WITHOUT_VALID_TOKEN], ids=[i for i, _ in CONTINUE_WITHOUT_VALID_TOKEN]
)
async def test_continuing_a_conversation_without_its_valid_token_is_403(
    server: RunningServer, make_body: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]
) -> None:
    own, other = await negotiate(server), await negotiate(server)
    async with http_client(server) as http:
        response = await http.post("/v1/negotiate", json=make_body(own, other))
    assert response.status_code == 403, response.text
    assert error_of(response)["code"] == "forbidden"


# --- §5 send ----------------------------------------------------------------------------------------


async def test_posting_a_message_is_202_with_the_stream_id_and_its_events_url(server: RunningServer) -> None:
    n = await negotiate(server)
    response = await post_message(server, n)
    assert response.status_code == 202
    body = response.json()
    assert RANDOM_ID.match(body["stream_id"]) and body["stream_id"].startswith("s_")
    assert body["events_url"] == f"/v1/streams/{body['stream_id']}/events"


async def test_posting_a_used_client_message_id_again_returns_the_first_stream_and_records_one_turn(
    server: RunningServer,
) -> None:
    n = await negotiate(server)
    first = await send(server, n, "m1")
    events = await sse_events(server, first, n["token"])
    again = await send(server, n, "m1")
    assert again == first
    assert await sse_events(server, again, n["token"]) == events
    turns = await get_history(server, n)
    assert [(t["role"], t.get("client_message_id"), t.get("stream_id")) for t in turns] == [
        ("user", "m1", None),
        ("assistant", None, first),
    ]


POST_AUTH_FAILURES: list[tuple[str, Callable[[dict[str, Any], dict[str, Any]], dict[str, str]], int]] = [
    ("no-authorization", lambda own, other: {}, 401),
    ("basic-scheme", lambda own, other: {"Authorization": f"Basic {own['token']}"}, 401),
    ("bearer-without-token", lambda own, other: {"Authorization": "Bearer"}, 401),
    ("token-without-scheme", lambda own, other: {"Authorization": own["token"]}, 401),
    ("garbage-token", lambda own, other: bearer("not-a-token"), 401),
    (
        "forged-token",
        lambda own, other: bearer(issue_token(b"not-the-server-secret", own["conversation_id"], "demo", 3600)),
        401,
    ),
    (
        "expired-token",
        lambda own, other: bearer(issue_token(SECRET.encode(), own["conversation_id"], "demo", -60)),
        401,
    ),
    ("another-conversations-token", lambda own, other: bearer(other["token"]), 403),
]


@pytest.mark.parametrize(
    ("make_headers", "status"),
    [(m, s) for _, m, s in POST_AUTH_FAILURES],
    ids=[i for i, _, _ in POST_AUTH_FAILURES],
)
async def test_posting_a_message_without_a_valid_token_for_the_conversation_is_refused_and_starts_nothing(
    server: RunningServer, make_headers: Callable[[dict[str, Any], dict[str, Any]], dict[str, str]], status: int
) -> None:
    own, other = await negotiate(server), await negotiate(server)
    response = await post_message(server, own, headers=make_headers(own, other))
    assert response.status_code == status, response.text
    assert error_of(response)["code"] == {401: "unauthorized", 403: "forbidden"}[status]
    assert await get_history(server, own) == []
    assert await get_history(server, other) == []


async def test_a_message_over_max_message_chars_is_413_and_one_at_the_limit_is_accepted(
    servers: ServerFactory,
) -> None:
    server = await servers(max_message_chars=100)
    n = await negotiate(server)
    too_long = await post_message(server, n, "m1", "x" * 101)
    assert too_long.status_code == 413
    error = error_of(too_long)
    assert error["code"] == "payload_too_large" and "100" in error["message"]
    assert await get_history(server, n) == []
    assert (await post_message(server, n, "m2", "x" * 100)).status_code == 202


@pytest.mark.parametrize("text", ["", "   \n\t"], ids=["empty", "whitespace"])
async def test_a_message_with_empty_text_is_rejected_with_400_or_422(server: RunningServer, text: str) -> None:
    n = await negotiate(server)
    response = await post_message(server, n, "m1", text)
    assert response.status_code in (400, 422)
    assert "text" in error_of(response)["message"]
    assert await get_history(server, n) == []


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"text": "hi"}, "client_message_id"),
        ({"client_message_id": 5, "text": "hi"}, "client_message_id"),
        ({"client_message_id": "m1"}, "text"),
        ({"client_message_id": "m1", "text": "hi", "colour": "red"}, "colour"),
    ],
    ids=["missing-client-message-id", "client-message-id-not-a-string", "missing-text", "unknown-field"],
)
async def test_a_malformed_message_body_is_422_naming_the_field(
    server: RunningServer, body: dict[str, Any], names: str
) -> None:
    n = await negotiate(server)
    response = await post_message(server, n, json=body)
    assert response.status_code == 422
    assert names in error_of(response)["message"]


# --- §5 follow --------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_query_token", [False, True], ids=["bearer-header", "token-query-parameter"])
async def test_sse_events_are_served_with_the_token_as_bearer_or_as_query_parameter(
    server: RunningServer, use_query_token: bool
) -> None:
    n = await negotiate(server)
    stream_id = await send(server, n)
    events = await sse_events(server, stream_id, n["token"], use_query_token=use_query_token)
    assert_well_formed(events)
    assert events[0]["conversation_id"] == n["conversation_id"] and events[0]["client_message_id"] == "m1"
    assert events[-1]["type"] == "done" and events[-1]["finish_reason"] == "stop"
    assert joined_text(events) == events[-1]["text"] == compose_answer(server.runtime.brands["demo"], QUESTION)


@pytest.mark.parametrize(
    ("token", "status"),
    [(None, 401), ("not-a-token", 401)],
    ids=["no-token", "garbage-token"],
)
async def test_sse_events_without_a_valid_token_are_401(server: RunningServer, token: str | None, status: int) -> None:
    n = await negotiate(server)
    stream_id = await send(server, n)
    async with http_client(server) as http:
        response = await http.get(f"/v1/streams/{stream_id}/events", params={"token": token} if token else {})
    assert response.status_code == status
    assert error_of(response)["code"] == "unauthorized"


@pytest.mark.parametrize(
    "resume",
    [{"last_event_id": 3}, {"after_seq": 3}],
    ids=["last-event-id", "after-seq"],
)
async def test_sse_resume_gets_exactly_the_events_after_the_given_seq(
    server: RunningServer, resume: dict[str, int]
) -> None:
    n = await negotiate(server)
    stream_id = await send(server, n)
    full = await sse_events(server, stream_id, n["token"])
    rest = await sse_events(server, stream_id, n["token"], **resume)
    assert rest == full[3:]
    assert_well_formed(rest, from_seq=4)


async def test_sse_last_event_id_wins_over_after_seq(server: RunningServer) -> None:
    n = await negotiate(server)
    stream_id = await send(server, n)
    full = await sse_events(server, stream_id, n["token"])
    assert await sse_events(server, stream_id, n["token"], last_event_id=4, after_seq=1) == full[4:]
    assert await sse_events(server, stream_id, n["token"], last_event_id=1, after_seq=4) == full[1:]


async def test_sse_resume_mid_reply_with_last_event_id_continues_live_without_gap_or_duplicate(
    servers: ServerFactory,
) -> None:
    server = await servers(offline_token_delay_ms=20)
    n = await negotiate(server)
    stream_id = await send(server, n)
    seen = await sse_events(server, stream_id, n["token"], stop_after=3)
    assert seen[-1]["type"] == "delta"
    rest = await sse_events(server, stream_id, n["token"], last_event_id=3)
    assert_well_formed(rest, from_seq=4)
    events = seen + rest
    assert_well_formed(events)
    assert joined_text(events) == events[-1]["text"] == compose_answer(server.runtime.brands["demo"], QUESTION)


@pytest.mark.parametrize("value", ["abc", "3.5", "-1"])
async def test_sse_with_a_last_event_id_that_is_not_a_sequence_number_is_400(server: RunningServer, value: str) -> None:
    n = await negotiate(server)
    stream_id = await send(server, n)
    async with http_client(server) as http:
        response = await http.get(
            f"/v1/streams/{stream_id}/events", headers={**bearer(n["token"]), "Last-Event-ID": value}
        )
    assert response.status_code == 400
    assert "Last-Event-ID" in error_of(response)["message"]


async def test_sse_sends_a_ping_comment_while_the_reply_is_silent(servers: ServerFactory) -> None:
    server = await servers(heartbeat_ms=200, offline_token_delay_ms=600)
    n = await negotiate(server)
    stream_id = await send(server, n)
    lines: list[str] = []
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=None) as http,
        http.stream("GET", f"/v1/streams/{stream_id}/events", headers=bearer(n["token"])) as response,
        asyncio.timeout(3 * T),
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            lines.append(line)
            if line.startswith(":"):
                break
    assert lines[-1] == ": ping"
    # The ping came during the reply: after its start event, before any terminal event.
    assert "event: start" in lines and "event: done" not in lines and "event: error" not in lines
    async with http_client(server) as http:  # end the slow reply rather than wait for it
        assert (await http.post(f"/v1/streams/{stream_id}/cancel", headers=bearer(n["token"]))).status_code == 202


async def test_sse_for_an_unknown_stream_sends_a_stream_expired_error_event_and_ends(server: RunningServer) -> None:
    n = await negotiate(server)
    reader = await read_sse(server.base_url, UNKNOWN_STREAM, n["token"], timeout=3)
    assert reader.status == 200
    assert [e.event for e in reader.events] == ["error"]
    error = reader.events[0].data
    assert error["code"] == "stream_expired" and error["stream_id"] == UNKNOWN_STREAM
    assert "seq" not in error


async def test_sse_for_another_conversations_stream_is_403(server: RunningServer) -> None:
    owner, intruder = await negotiate(server), await negotiate(server)
    stream_id = await send(server, owner)
    reader = await read_sse(server.base_url, stream_id, intruder["token"], timeout=3)
    assert reader.status == 403
    assert reader.events[0].data["error"]["code"] == "forbidden"


# --- §5 cancel --------------------------------------------------------------------------------------


async def test_cancel_is_202_and_the_stream_ends_with_done_cancelled(servers: ServerFactory) -> None:
    server = await servers(offline_token_delay_ms=50)
    n = await negotiate(server)
    stream_id = await send(server, n)
    seen = await sse_events(server, stream_id, n["token"], stop_after=2)
    assert [e["type"] for e in seen] == ["start", "delta"]
    async with http_client(server) as http:
        response = await http.post(f"/v1/streams/{stream_id}/cancel", headers=bearer(n["token"]))
    assert response.status_code == 202
    assert response.json()["stream_id"] == stream_id
    events = seen + await sse_events(server, stream_id, n["token"], last_event_id=2)
    assert_well_formed(events)
    done = events[-1]
    assert done["type"] == "done" and done["finish_reason"] == "cancelled"
    assert done["text"] == joined_text(events) != compose_answer(server.runtime.brands["demo"], QUESTION)


async def test_cancel_of_an_unknown_stream_is_410(server: RunningServer) -> None:
    n = await negotiate(server)
    async with http_client(server) as http:
        response = await http.post(f"/v1/streams/{UNKNOWN_STREAM}/cancel", headers=bearer(n["token"]))
    assert response.status_code == 410
    assert error_of(response)["code"] == "stream_expired"


async def test_cancel_of_another_conversations_stream_is_403_and_the_reply_goes_on(servers: ServerFactory) -> None:
    server = await servers(offline_token_delay_ms=20)
    owner, intruder = await negotiate(server), await negotiate(server)
    stream_id = await send(server, owner)
    async with http_client(server) as http:
        response = await http.post(f"/v1/streams/{stream_id}/cancel", headers=bearer(intruder["token"]))
    assert response.status_code == 403
    events = await sse_events(server, stream_id, owner["token"])
    assert events[-1]["finish_reason"] == "stop"


# --- §6 history -------------------------------------------------------------------------------------


async def test_history_lists_user_and_assistant_turns_in_order_with_the_final_text(server: RunningServer) -> None:
    n = await negotiate(server)
    dones = []
    for cmid, question in [("m1", QUESTION), ("m2", "Do you have decaf beans?")]:
        stream_id = await send(server, n, cmid, text=question)
        dones.append((stream_id, (await sse_events(server, stream_id, n["token"]))[-1]))
    turns = await get_history(server, n)
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant"]
    assert [(t["text"], t["client_message_id"]) for t in turns[0::2]] == [
        (QUESTION, "m1"),
        ("Do you have decaf beans?", "m2"),
    ]
    for turn, (stream_id, done) in zip(turns[1::2], dones, strict=True):
        assert (turn["stream_id"], turn["status"], turn["text"]) == (stream_id, "done", done["text"])


async def test_history_shows_a_reply_still_running_as_streaming_with_its_text_so_far(servers: ServerFactory) -> None:
    server = await servers(offline_token_delay_ms=25)
    n = await negotiate(server)
    stream_id = await send(server, n)
    seen = await sse_events(server, stream_id, n["token"], stop_after=3)
    running = (await get_history(server, n))[1]
    assert (running["role"], running["stream_id"], running["status"]) == ("assistant", stream_id, "streaming")
    final = compose_answer(server.runtime.brands["demo"], QUESTION)
    assert running["text"].startswith(joined_text(seen)) and final.startswith(running["text"])
    assert running["text"] != final
    done = (await sse_events(server, stream_id, n["token"], last_event_id=3))[-1]
    finished = (await get_history(server, n))[1]
    assert (finished["status"], finished["text"]) == ("done", done["text"])


@pytest.mark.parametrize(
    ("make_headers", "status"),
    [(lambda own, other: {}, 401), (lambda own, other: bearer(other["token"]), 403)],
    ids=["no-token", "another-conversations-token"],
)
async def test_history_without_the_conversations_token_is_refused(
    server: RunningServer, make_headers: Callable[[dict[str, Any], dict[str, Any]], dict[str, str]], status: int
) -> None:
    own, other = await negotiate(server), await negotiate(server)
    await send(server, own)
    async with http_client(server) as http:
        response = await http.get(f"/v1/conversations/{own['conversation_id']}", headers=make_headers(own, other))
    assert response.status_code == status
    assert "turns" not in response.json()


# --- §8 operations ----------------------------------------------------------------------------------


async def test_healthz_answers_200(server: RunningServer) -> None:
    async with http_client(server) as http:
        response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_readyz_is_200_with_the_memory_buffer_and_the_offline_provider(server: RunningServer) -> None:
    async with http_client(server) as http:
        response = await http.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


async def test_readyz_is_503_with_a_reason_when_the_redis_buffer_is_unreachable(servers: ServerFactory) -> None:
    redis = RedisProcess()
    await asyncio.to_thread(redis.start)
    try:
        server = await servers(buffer_url=redis.url)
        async with http_client(server) as http:
            assert (await http.get("/readyz")).status_code == 200
            await asyncio.to_thread(redis.stop)
            response = await http.get("/readyz")
    finally:
        await asyncio.to_thread(redis.stop)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and "buffer" in body["reason"]
