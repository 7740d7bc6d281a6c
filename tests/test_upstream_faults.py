"""Upstream (model provider) faults, end to end: the real server, the real ``openai`` SDK, a fake provider.

Each test points a real server at :class:`testkit.fake_openai.FakeOpenAI`, makes the fake misbehave in
one way (stall, drip, drop, reset, garbage, error status), and checks what a client sees on the wire
(docs/protocol.md §3): a well-formed stream that ends with exactly one defined terminal event, within the
deadline that governs that fault, and ``done.text`` equal to what the deltas add up to.

The server's deadlines are set to fractions of the time unit ``T`` so every fault ends quickly; the
elapsed-time assertions are behaviour bounds ("ended by this deadline, not by some later one"), not
benchmarks, hence the generous ``MARGIN``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from persona.prompt import system_prompt
from testkit import T
from testkit.clients import (
    WsClient,
    assert_well_formed,
    joined_text,
    negotiate,
    post_message,
    read_sse,
    stream_events,
    ws_turn,
)
from testkit.fake_openai import (
    CloseWithoutDone,
    FakeOpenAI,
    InStreamError,
    MalformedChunk,
    RecordedRequest,
    Reply,
    Reset,
    Scenario,
    StallAfter,
    StallBeforeHeaders,
    Status,
    split_words,
)
from testkit.server import RunningServer, ServerFactory

pytestmark = pytest.mark.timeout(20)

CONNECT_S = 0.5 * T
FIRST_TOKEN_S = 0.5 * T
STALL_S = 0.5 * T
TOTAL_S = 4.0 * T
RETRY_MAX_WAIT_S = 1.0 * T
RETRY_PAUSE_S = 0.25  # the job's pause before its one retry when the upstream gave no retry-after
MARGIN = 1.0 * T

QUESTION = "How long does shipping take?"
REPLY_TEXT = "We roast on Mondays and Thursdays and ship within a day of roasting."
LONG_TEXT = " ".join(f"word{i}" for i in range(40))


DEADLINES = {
    "upstream_connect_timeout_s": CONNECT_S,
    "upstream_first_token_timeout_s": FIRST_TOKEN_S,
    "upstream_stall_timeout_s": STALL_S,
    "upstream_total_deadline_s": TOTAL_S,
    "upstream_retry_max_wait_s": RETRY_MAX_WAIT_S,
}


@pytest.fixture
def start(servers_on_fake: ServerFactory) -> ServerFactory:
    """Start a server whose model provider is the fake, with the short deadlines above (overridable)."""
    return functools.partial(servers_on_fake, **DEADLINES)


# --- clients -----------------------------------------------------------------------------------------


async def timed_ws_turn(
    server: RunningServer, brand: str = "demo", text: str = QUESTION
) -> tuple[list[dict[str, Any]], float]:
    """Send one message over WebSocket; the stream's events to the terminal one, and the seconds it took."""
    n = await negotiate(server.base_url, brand)
    started = time.monotonic()
    events = await ws_turn(server.ws_url, n, text, timeout=15)
    return events, time.monotonic() - started


async def sse_send(server: RunningServer, n: dict[str, Any], text: str = QUESTION) -> str:
    response = await post_message(server.base_url, n, text)
    assert response.status_code == 202, response.text
    stream_id: str = response.json()["stream_id"]
    return stream_id


async def timed_sse_turn(
    server: RunningServer, brand: str = "demo", text: str = QUESTION
) -> tuple[list[dict[str, Any]], float]:
    """Send one message over SSE; the stream's events to the terminal one, and the seconds it took."""
    n = await negotiate(server.base_url, brand)
    started = time.monotonic()
    stream_id = await sse_send(server, n, text)
    reader = await read_sse(server.base_url, stream_id, n["token"], timeout=15)
    elapsed = time.monotonic() - started
    assert reader.status == 200, reader.events
    return [e.data for e in reader.events], elapsed


TURNS = {"websocket": timed_ws_turn, "sse": timed_sse_turn}


def assert_done(events: list[dict[str, Any]], finish_reason: str) -> dict[str, Any]:
    """A well-formed stream ending in ``done`` with ``finish_reason``, whose text equals the deltas."""
    assert_well_formed(events)
    done = events[-1]
    assert done["type"] == "done", done
    assert done["finish_reason"] == finish_reason, done
    assert done["text"] == joined_text(events)
    return done


def assert_error(events: list[dict[str, Any]], code: str, *, retryable: bool | None = None) -> dict[str, Any]:
    """A well-formed stream ending in ``error`` with ``code`` (and ``retryable`` when given)."""
    assert_well_formed(events)
    error = events[-1]
    assert error["type"] == "error", error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    if retryable is not None:
        assert error["retryable"] is retryable, error
    return error


def fallback_text(server: RunningServer) -> str:
    text = server.runtime.brands["fallback-demo"].fallbacks.error
    assert text
    return text


def deltas(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "delta"]


def retry_counts(requests: list[RecordedRequest]) -> list[str]:
    """The SDK's own retry counter per request; absent counts as "0" (max_retries=0 sends "0" or nothing)."""
    return [r.headers.get("x-stainless-retry-count", "0") for r in requests]


# --- a normal reply ----------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_a_normal_reply_streams_the_upstream_text_from_one_streaming_request_without_sdk_retries(
    fake: FakeOpenAI, start: ServerFactory, transport: str
) -> None:
    server = await start()
    fake.enqueue(Reply(text=REPLY_TEXT))
    events, elapsed = await TURNS[transport](server)
    done = assert_done(events, "stop")
    assert done["text"] == REPLY_TEXT
    assert elapsed < MARGIN

    assert len(fake.chat_requests) == 1
    request = fake.chat_requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.json is not None
    assert request.json["stream"] is True
    assert request.json["stream_options"] == {"include_usage": True}
    messages = request.json["messages"]
    assert messages[0] == {"role": "system", "content": system_prompt(server.runtime.brands["demo"])}
    assert messages[-1] == {"role": "user", "content": QUESTION}
    assert retry_counts(fake.chat_requests) == ["0"]
    await fake.wait_for_open_connections(0, timeout=2 * T)


# --- stalls: before headers (connect deadline), mid-reply (stall deadline) -----------------------------------
# A brand without an error fallback gets a retryable error; one with it gets the fallback instead.


def a_retryable_timeout_error_and_no_text(server: RunningServer, events: list[dict[str, Any]]) -> None:
    assert_error(events, "upstream_timeout", retryable=True)
    assert deltas(events) == []


def the_brand_fallback_alone(server: RunningServer, events: list[dict[str, Any]]) -> None:
    done = assert_done(events, "fallback")
    assert done["text"] == fallback_text(server)
    assert [e["type"] for e in events] == ["start", "delta", "done"]


@pytest.mark.parametrize(
    ("brand", "ends_with"),
    [
        pytest.param("demo", a_retryable_timeout_error_and_no_text, id="timeout-error"),
        pytest.param("fallback-demo", the_brand_fallback_alone, id="brand-fallback"),
    ],
)
async def test_an_upstream_that_never_answers_is_retried_once_then_ends_in_a_timeout_error_or_the_brand_fallback(
    fake: FakeOpenAI, start: ServerFactory, brand: str, ends_with: Callable[[RunningServer, list[dict[str, Any]]], None]
) -> None:
    server = await start()
    fake.enqueue(StallBeforeHeaders(), StallBeforeHeaders())
    events, elapsed = await timed_ws_turn(server, brand=brand)
    ends_with(server, events)
    assert len(fake.chat_requests) == 2
    assert elapsed < 2 * CONNECT_S + RETRY_PAUSE_S + MARGIN
    await fake.wait_for_open_connections(0, timeout=2 * T)


def a_retryable_timeout_error_after_the_partial_text(server: RunningServer, events: list[dict[str, Any]]) -> None:
    assert_error(events, "upstream_timeout", retryable=True)
    assert joined_text(events) == "".join(split_words(REPLY_TEXT)[:3])


def the_partial_text_retracted_for_the_brand_fallback(server: RunningServer, events: list[dict[str, Any]]) -> None:
    fallback = fallback_text(server)
    done = assert_done(events, "fallback")
    assert done["text"] == fallback
    assert deltas(events), "the partial text was streamed before the stall"
    retract = events[-2]
    assert retract["type"] == "retract", [e["type"] for e in events]
    assert retract["text"] == fallback
    assert retract["reason"]


@pytest.mark.parametrize(
    ("transport", "brand", "ends_with"),
    [
        pytest.param("websocket", "demo", a_retryable_timeout_error_after_the_partial_text, id="timeout-error"),
        pytest.param("sse", "fallback-demo", the_partial_text_retracted_for_the_brand_fallback, id="brand-fallback"),
    ],
)
async def test_a_stall_after_some_text_is_not_retried_ends_in_an_error_or_the_brand_fallback_and_closes_the_upstream_socket(
    fake: FakeOpenAI,
    start: ServerFactory,
    transport: str,
    brand: str,
    ends_with: Callable[[RunningServer, list[dict[str, Any]]], None],
) -> None:
    server = await start()
    fake.enqueue(StallAfter(chunks=3, text=REPLY_TEXT))
    events, elapsed = await TURNS[transport](server, brand=brand)
    ends_with(server, events)
    assert len(fake.chat_requests) == 1
    assert elapsed < STALL_S + MARGIN
    await fake.wait_for_open_connections(0, timeout=2 * T)


# --- broken streams ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "turn", "code"),
    [
        pytest.param(
            CloseWithoutDone(chunks=2, text=REPLY_TEXT), "sse", "upstream_unavailable", id="close-without-done"
        ),
        pytest.param(Reset(chunks=2, text=REPLY_TEXT), "ws", "upstream_unavailable", id="connection-reset"),
        pytest.param(MalformedChunk(chunks=2, text=REPLY_TEXT), "ws", "upstream_error", id="malformed-chunk"),
        pytest.param(InStreamError(chunks=2, text=REPLY_TEXT), "ws", "upstream_error", id="in-stream-error"),
    ],
)
async def test_a_stream_broken_mid_reply_ends_at_once_in_an_error_after_the_partial_text(
    fake: FakeOpenAI, start: ServerFactory, fault: Scenario, turn: str, code: str
) -> None:
    server = await start()
    fake.enqueue(fault)
    events, elapsed = await (timed_sse_turn(server) if turn == "sse" else timed_ws_turn(server))
    assert_error(events, code)
    assert joined_text(events) == "".join(split_words(REPLY_TEXT)[:2])
    assert len(fake.chat_requests) == 1  # text was streamed: no retry
    assert elapsed < MARGIN
    await fake.wait_for_open_connections(0, timeout=2 * T)


# --- failures before any text: one retry --------------------------------------------------------------------


@pytest.mark.parametrize(
    "first", [Status(500), Status(503), Reset(chunks=0)], ids=["status-500", "status-503", "reset-before-text"]
)
async def test_a_failure_before_any_text_is_retried_once_and_only_the_second_attempt_is_shown(
    fake: FakeOpenAI, start: ServerFactory, first: Scenario
) -> None:
    server = await start()
    fake.enqueue(first, Reply(text=REPLY_TEXT))
    events, elapsed = await timed_ws_turn(server)
    done = assert_done(events, "stop")
    assert done["text"] == REPLY_TEXT
    assert len(fake.chat_requests) == 2
    assert [type(r.scenario) for r in fake.chat_requests] == [type(first), Reply]
    assert retry_counts(fake.chat_requests) == ["0", "0"], "the job retries, not the SDK"
    assert elapsed < RETRY_PAUSE_S + MARGIN


async def test_a_429_with_a_short_retry_after_is_retried_no_sooner_than_it_asks_over_sse(
    fake: FakeOpenAI, start: ServerFactory
) -> None:
    server = await start()
    retry_after = 0.3 * T
    fake.enqueue(Status(429, retry_after=retry_after), Reply(text=REPLY_TEXT))
    events, elapsed = await timed_sse_turn(server)
    done = assert_done(events, "stop")
    assert done["text"] == REPLY_TEXT
    assert len(fake.chat_requests) == 2
    first, second = (r.received_at for r in fake.chat_requests)
    assert second - first >= retry_after
    assert elapsed < retry_after + MARGIN


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        # Longer than the retry limit, yet short enough that the total deadline would allow the wait.
        pytest.param(
            Status(429, retry_after=2 * RETRY_MAX_WAIT_S), "rate_limited", True, id="429-longer-than-the-retry-limit"
        ),
        pytest.param(Status(401), "upstream_error", False, id="401"),
    ],
)
async def test_an_upstream_error_that_is_not_worth_a_retry_ends_at_once_in_an_error_saying_whether_to_retry_later(
    fake: FakeOpenAI, start: ServerFactory, status: Status, code: str, retryable: bool
) -> None:
    assert (status.retry_after or 0) < TOTAL_S - MARGIN
    server = await start()
    fake.enqueue(status, Reply(text=REPLY_TEXT))
    events, elapsed = await timed_ws_turn(server)
    assert_error(events, code, retryable=retryable)
    assert deltas(events) == []
    assert len(fake.chat_requests) == 1
    assert fake.pending == 1, "the good reply was never asked for"
    assert elapsed < MARGIN


# --- slow replies: per-gap stall deadline, total deadline, first-token deadline ----------------------------------


async def test_a_slow_drip_with_gaps_under_the_stall_deadline_completes_over_sse(
    fake: FakeOpenAI, start: ServerFactory
) -> None:
    server = await start()
    text = "one two three four five six"  # 5 gaps of 0.6 x STALL_S: 3 x STALL_S in all
    fake.enqueue(Reply(text=text, delay_s=0.6 * STALL_S))
    events, elapsed = await timed_sse_turn(server)
    done = assert_done(events, "stop")
    assert done["text"] == text
    assert len(fake.chat_requests) == 1
    assert elapsed > 2 * STALL_S, "the whole reply took longer than one stall deadline"


async def test_a_slow_drip_beyond_the_total_deadline_ends_in_a_timeout_error_at_the_deadline(
    fake: FakeOpenAI, start: ServerFactory
) -> None:
    total_s = 1.0 * T
    server = await start(upstream_total_deadline_s=total_s)
    fake.enqueue(Reply(text=LONG_TEXT, delay_s=0.6 * STALL_S))
    events, elapsed = await timed_ws_turn(server)
    assert_error(events, "upstream_timeout", retryable=True)
    assert deltas(events), "text was streaming when the deadline hit"
    assert LONG_TEXT.startswith(joined_text(events))
    assert len(fake.chat_requests) == 1
    assert total_s <= elapsed < total_s + MARGIN
    await fake.wait_for_open_connections(0, timeout=2 * T)


async def test_no_first_token_within_its_deadline_is_retried_once_then_ends_in_a_timeout_error(
    fake: FakeOpenAI, start: ServerFactory
) -> None:
    server = await start()
    late = Reply(text=REPLY_TEXT, first_delay_s=4 * FIRST_TOKEN_S)
    fake.enqueue(late, late)
    events, elapsed = await timed_ws_turn(server)
    assert_error(events, "upstream_timeout", retryable=True)
    assert deltas(events) == []
    assert len(fake.chat_requests) == 2
    assert elapsed < 2 * FIRST_TOKEN_S + RETRY_PAUSE_S + MARGIN
    await fake.wait_for_open_connections(0, timeout=2 * T)


# --- odd but valid endings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "finish_reason"),
    [
        pytest.param(Reply(text=REPLY_TEXT, include_usage=False), "stop", id="without-the-usage-chunk"),
        pytest.param(Reply(text=REPLY_TEXT, finish_reason="length"), "length", id="finish-reason-length"),
    ],
)
async def test_an_odd_but_valid_upstream_ending_completes_normally_with_the_upstream_finish_reason(
    fake: FakeOpenAI, start: ServerFactory, reply: Reply, finish_reason: str
) -> None:
    server = await start()
    fake.enqueue(reply)
    events, _ = await timed_ws_turn(server)
    done = assert_done(events, finish_reason)
    assert done["text"] == REPLY_TEXT
    assert len(fake.chat_requests) == 1


def second_delta(frame: dict[str, Any]) -> bool:
    """``start`` is seq 1, so the second delta is seq 3."""
    return frame["type"] == "delta" and frame["seq"] >= 3


async def send_and_read_to_the_second_delta(client: WsClient) -> str:
    """Send the question; its stream id, once the reply's second delta has arrived."""
    await client.send({"type": "send", "client_message_id": "m1", "text": QUESTION})
    accepted = await client.recv()
    assert accepted["type"] == "accepted", accepted
    await client.recv_until(second_delta, timeout=5)
    stream_id: str = accepted["stream_id"]
    return stream_id


# --- cancel and disconnect -----------------------------------------------------------------------------------


async def cancel_over_websocket(server: RunningServer) -> tuple[list[dict[str, Any]], float]:
    """Send over WebSocket, cancel after the second delta; the stream's events and the seconds the cancel took."""
    n = await negotiate(server.base_url)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        stream_id = await send_and_read_to_the_second_delta(client)
        started = time.monotonic()
        await client.send({"type": "cancel", "stream_id": stream_id})
        await client.recv_until(lambda f: f.get("stream_id") == stream_id and f["type"] in ("done", "error"))
        elapsed = time.monotonic() - started
    return stream_events(client.frames, stream_id), elapsed


async def cancel_over_sse(server: RunningServer) -> tuple[list[dict[str, Any]], float]:
    """Send over SSE, cancel after the second delta; the stream's events and the seconds the cancel took."""
    n = await negotiate(server.base_url)
    stream_id = await sse_send(server, n)
    first = await read_sse(server.base_url, stream_id, n["token"], stop_after=3, timeout=5)  # start + 2 deltas
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
        response = await http.post(f"/v1/streams/{stream_id}/cancel", headers={"Authorization": f"Bearer {n['token']}"})
    assert response.status_code == 202, response.text
    rest = await read_sse(server.base_url, stream_id, n["token"], after_seq=first.events[-1].id, timeout=5)
    elapsed = time.monotonic() - started
    return [e.data for e in first.events + rest.events], elapsed


@pytest.mark.parametrize("cancel", [cancel_over_websocket, cancel_over_sse], ids=["websocket", "sse"])
async def test_cancel_ends_a_slow_reply_with_the_text_so_far_and_closes_the_upstream_socket(
    fake: FakeOpenAI,
    start: ServerFactory,
    cancel: Callable[[RunningServer], Awaitable[tuple[list[dict[str, Any]], float]]],
) -> None:
    server = await start()
    fake.enqueue(Reply(text=LONG_TEXT, delay_s=0.1 * T))
    events, elapsed = await cancel(server)
    done = assert_done(events, "cancelled")
    assert done["text"] and LONG_TEXT.startswith(done["text"])
    assert done["text"] != LONG_TEXT
    assert elapsed < MARGIN
    await fake.wait_for_open_connections(0, timeout=2 * T)


async def test_a_reply_keeps_generating_after_the_websocket_drops_and_resumes_over_sse(
    fake: FakeOpenAI, start: ServerFactory
) -> None:
    server = await start()
    # Words the demo brand's guard lets through (it replaces off-topic replies: "piece0 piece1 …" is one).
    text = "Our beans are roasted fresh, and the pour-over guide walks you through brewing them."
    fake.enqueue(Reply(text=text, delay_s=0.05 * T))
    n = await negotiate(server.base_url)
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        stream_id = await send_and_read_to_the_second_delta(client)
    first_part = stream_events(client.frames, stream_id)
    assert first_part[-1]["type"] == "delta"

    # The upstream request runs to its end with nobody listening.
    await fake.wait_for_open_connections(0, timeout=5 * T)
    rest = await read_sse(server.base_url, stream_id, n["token"], after_seq=first_part[-1]["seq"], timeout=5)
    events = first_part + [e.data for e in rest.events]
    done = assert_done(events, "stop")
    assert done["text"] == text
    assert len(fake.chat_requests) == 1
