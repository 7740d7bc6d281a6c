"""Tests that testkit/fake_openai/ behaves like the real API as seen by the official SDK.

What openai 3.54 (on httpx2 / httpcore2 / anyio) was observed to do with each fault, for
``client = AsyncOpenAI(max_retries=0)`` and ``stream = await client.chat.completions.create(
..., stream=True)``.  "create" = raised by ``await create(...)``; "iter" = raised while
iterating the stream.  Every ``openai.*`` error below is a subclass of ``openai.APIError``
(which subclasses ``openai.OpenAIError``), except where marked NOT.

  Reply(include_usage=False)   iter ends normally after the finish_reason chunk; no usage chunk,
                               no error.  Without ``stream_options`` the SDK sends none: the body
                               is exactly {model, messages, stream}; chunk.usage is None throughout.
  StallBeforeHeaders           create blocks; asyncio.timeout around it -> TimeoutError (socket
                               closed by the cancellation).  Per-call ``timeout=0.3`` ->
                               openai.APITimeoutError <- httpx2.ReadTimeout.
  StallAfter(n)                create returns; iter yields role chunk + n chunks, then blocks.
                               asyncio.timeout -> TimeoutError, response closed.  Per-call
                               ``timeout`` (a per-read timeout, NOT a total deadline: a slow drip
                               with gaps shorter than it never times out) -> openai.APITimeoutError
                               <- httpx2.ReadTimeout, raised from iter.
  CloseWithoutDone(n)          iter ENDS NORMALLY after role + n chunks: no exception, no
                               finish_reason, no [DONE].  Callers must detect a missing
                               finish_reason themselves.  (Non-streaming, body cut short:
                               openai.APIConnectionError <- httpx2.RemoteProtocolError.)
  Reset(n)                     iter yields role + n chunks, then openai.APIConnectionError
                               <- httpx2.ReadError <- httpcore2.ReadError <- anyio.BrokenResourceError
                               <- ConnectionResetError.
  MalformedChunk(n)            iter yields role + n chunks, then json.JSONDecodeError, raw and
                               unwrapped: NOT an openai error (a ValueError).  Same for a
                               non-streaming garbage body.
  InStreamError(n)             iter yields role + n chunks, then exactly openai.APIError (no
                               subclass, no status_code attribute): .message = the message,
                               .body = the "error" dict, .type = "server_error", .code = None.
  Status(429, retry_after=1)   create -> openai.RateLimitError (status_code 429), its
                               .response.headers["retry-after"] == "1".  With max_retries > 0 the
                               SDK retries, honouring retry-after-ms, and sends
                               x-stainless-retry-count 0, 1, ...
  Status(500)                  create -> openai.InternalServerError; 400 -> openai.BadRequestError;
                               404 -> openai.NotFoundError.
  FakeOpenAI.stop() mid-call   openai.APIConnectionError <- httpx2.RemoteProtocolError: "Server
                               disconnected without sending a response." before headers, "peer
                               closed connection without sending complete message body
                               (incomplete chunked read)" mid-stream.

Closing and cancellation:
  * ``break`` out of ``async for chunk in stream`` does NOT close the socket: the SDK's inner
    generator stays suspended and the connection stays open until ``await stream.close()`` (or
    ``async with stream:``, or garbage collection).  Always use ``async with`` or ``close()``.
  * Cancelling the consuming task (or an ``asyncio.timeout`` around ``async for``) closes the
    response and socket promptly.  Iterating the same stream again afterwards silently yields
    nothing (no error).
  * ``create(stream=True)`` returns as soon as the response headers arrive; the first chunk may
    come much later.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import TypeVar

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from testkit.fake_openai import (
    DEFAULT_TEXT,
    CloseWithoutDone,
    FakeOpenAI,
    InStreamError,
    MalformedChunk,
    Reply,
    Reset,
    Scenario,
    StallAfter,
    StallBeforeHeaders,
    Status,
    split_words,
)

pytestmark = pytest.mark.timeout(10)

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]
WORDS = split_words(DEFAULT_TEXT)
E = TypeVar("E", bound=BaseException)


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(api_key="test", base_url=fake.base_url, max_retries=0, timeout=5.0)
    yield sdk
    await sdk.close()


async def open_stream(
    client: openai.AsyncOpenAI, *, usage: bool = True, sdk_timeout: float | httpx2.Timeout = 5.0
) -> openai.AsyncStream[ChatCompletionChunk]:
    # Note: stream_options=None would send an explicit `"stream_options": null`; omit leaves it out.
    return await client.chat.completions.create(
        model="gpt-test",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True} if usage else openai.omit,
        timeout=sdk_timeout,
    )


async def chunks_then_error(
    client: openai.AsyncOpenAI, expected: type[E], *, sdk_timeout: float | httpx2.Timeout = 5.0
) -> tuple[list[ChatCompletionChunk], E]:
    """Iterate a new stream until it raises ``expected`` (within 3 s): the chunks that came first, and the error."""
    chunks: list[ChatCompletionChunk] = []
    with pytest.raises(expected) as info:
        async with asyncio.timeout(3), await open_stream(client, sdk_timeout=sdk_timeout) as stream:
            async for chunk in stream:
                chunks.append(chunk)
    return chunks, info.value


def contents(chunks: list[ChatCompletionChunk]) -> list[str]:
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content is not None]


# --------------------------------------------------------------------------------------------
# Well-behaved replies
# --------------------------------------------------------------------------------------------


async def test_full_stream_with_usage(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    async with asyncio.timeout(5):
        stream = await open_stream(client)
        async with stream:
            chunks = [chunk async for chunk in stream]

    assert "".join(contents(chunks)) == DEFAULT_TEXT
    first, finish, last = chunks[0], chunks[-2], chunks[-1]
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    assert len(chunks) == 1 + len(WORDS) + 2  # role, words, finish, usage
    assert finish.choices[0].finish_reason == "stop"
    assert finish.choices[0].delta.content is None
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == len(WORDS)
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-test" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    await fake.wait_for_open_connections(0)


async def test_stream_without_stream_options_has_no_usage(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    async with asyncio.timeout(5):
        async with await open_stream(client, usage=False) as stream:
            chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)
    assert fake.requests[-1].json == {"model": "gpt-test", "messages": MESSAGES, "stream": True}


async def test_missing_usage_chunk(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(Reply(include_usage=False))
    async with asyncio.timeout(5):
        async with await open_stream(client) as stream:
            chunks = [chunk async for chunk in stream]
    assert "".join(contents(chunks)) == DEFAULT_TEXT
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)
    assert fake.requests[-1].json is not None
    assert fake.requests[-1].json["stream_options"] == {"include_usage": True}


async def test_finish_reason_is_configurable(client: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    fake.enqueue(Reply(text="cut", finish_reason="length"))
    async with asyncio.timeout(5), await open_stream(client) as stream:
        chunks = [chunk async for chunk in stream]
    assert contents(chunks) == ["", "cut"]
    assert chunks[-2].choices[0].finish_reason == "length"


async def test_non_streaming(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(Reply(text="Plain answer here."))
    async with asyncio.timeout(5):
        completion = await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-test"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "Plain answer here."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3
    assert fake.requests[-1].json is not None
    assert "stream" not in fake.requests[-1].json


async def test_first_delay_create_returns_at_headers(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(Reply(text="late start", first_delay_s=0.5))
    async with asyncio.timeout(5):
        start = time.monotonic()
        async with await open_stream(client) as stream:
            opened = time.monotonic() - start
            first = await stream.__anext__()
            first_at = time.monotonic() - start
            rest = [chunk async for chunk in stream]
    assert opened < 0.4
    assert first_at >= 0.48
    assert "".join(contents([first, *rest])) == "late start"


async def test_slow_drip_and_sdk_timeout_is_per_read(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    """Reply(delay_s=...) drips; the SDK's ``timeout`` bounds each read, not the whole stream."""
    fake.enqueue(Reply(text="one two three four five", delay_s=0.12))
    async with asyncio.timeout(5):
        start = time.monotonic()
        async with await open_stream(client, sdk_timeout=0.3) as stream:
            chunks = [chunk async for chunk in stream]
        elapsed = time.monotonic() - start
    assert "".join(contents(chunks)) == "one two three four five"
    assert elapsed >= 0.45  # 4 gaps of 0.12 s, longer than the 0.3 s "timeout", and no error


async def test_models_endpoint(client: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    async with asyncio.timeout(5):
        models = await client.models.list()
    assert [m.id for m in models.data] == ["fake-model"]
    assert fake.requests[-1].method == "GET"
    assert fake.requests[-1].path == "/v1/models"
    assert fake.requests[-1].scenario is None


async def test_unknown_path_is_openai_404(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        async with asyncio.timeout(5):
            await client.get("/nope", cast_to=httpx2.Response)
    assert info.value.status_code == 404
    assert isinstance(info.value.body, dict)
    assert info.value.body["type"] == "invalid_request_error"


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


async def test_stall_before_headers_blocks_create(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(StallBeforeHeaders())
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await open_stream(client)
    assert time.monotonic() - start < 1.5
    # Cancelling create() closed the client's socket; the fake noticed.
    await fake.wait_for_open_connections(0, timeout=2)


async def test_stall_before_headers_sdk_timeout(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(StallBeforeHeaders())
    with pytest.raises(openai.APITimeoutError) as info:
        async with asyncio.timeout(3):
            await open_stream(client, sdk_timeout=0.3)
    assert isinstance(info.value.__cause__, httpx2.ReadTimeout)
    await fake.wait_for_open_connections(0, timeout=2)


async def test_stall_after_chunks(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(StallAfter(chunks=3))
    chunks: list[ChatCompletionChunk] = []
    stream = await open_stream(client)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            async for chunk in stream:
                chunks.append(chunk)
    assert contents(chunks) == ["", *WORDS[:3]]
    assert all(c.choices[0].finish_reason is None for c in chunks)
    assert stream.response.is_closed
    await fake.wait_for_open_connections(0, timeout=2)
    # Iterating the same stream again after the cancellation silently yields nothing.
    async with asyncio.timeout(1):
        assert [c async for c in stream] == []


async def test_stall_after_chunks_sdk_read_timeout(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(StallAfter(chunks=2))
    chunks, error = await chunks_then_error(client, openai.APITimeoutError, sdk_timeout=httpx2.Timeout(5.0, read=0.3))
    assert isinstance(error.__cause__, httpx2.ReadTimeout)
    assert contents(chunks) == ["", *WORDS[:2]]


async def test_close_without_done_ends_iteration_quietly(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(CloseWithoutDone(chunks=2))
    async with asyncio.timeout(3), await open_stream(client) as stream:
        chunks = [chunk async for chunk in stream]  # no exception at all
    assert contents(chunks) == ["", *WORDS[:2]]
    assert all(c.choices[0].finish_reason is None for c in chunks)
    assert all(c.usage is None for c in chunks)
    await fake.wait_for_open_connections(0, timeout=2)


async def test_reset_raises_connection_error(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(Reset(chunks=2))
    chunks, error = await chunks_then_error(client, openai.APIConnectionError)
    assert type(error) is openai.APIConnectionError
    cause = error.__cause__
    assert isinstance(cause, httpx2.ReadError)
    root: BaseException | None = cause
    while root is not None and not isinstance(root, ConnectionResetError):
        root = root.__cause__ or root.__context__
    assert isinstance(root, ConnectionResetError)
    assert contents(chunks) == ["", *WORDS[:2]]
    await fake.wait_for_open_connections(0, timeout=2)


async def test_malformed_chunk_raises_raw_json_error(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(MalformedChunk(chunks=2))
    chunks, error = await chunks_then_error(client, json.JSONDecodeError)
    assert not isinstance(error, openai.OpenAIError)
    assert contents(chunks) == ["", *WORDS[:2]]
    await fake.wait_for_open_connections(0, timeout=2)


async def test_malformed_chunk_then_continues(fake: FakeOpenAI) -> None:
    """The bytes after the garbage are a normal stream (checked without the SDK's decoder)."""
    fake.enqueue(MalformedChunk(chunks=1, text="a b c"))
    async with httpx2.AsyncClient(base_url=fake.base_url, timeout=3) as http:
        response = await http.post("/chat/completions", json={"model": "m", "messages": [], "stream": True})
    events = [e for e in response.text.split("\n\n") if e]
    assert events[2] == "data: {not json"
    assert json.loads(events[3].removeprefix("data: "))["choices"][0]["delta"] == {"content": "b "}
    assert events[-1] == "data: [DONE]"
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["transfer-encoding"] == "chunked"


async def test_in_stream_error_raises_api_error(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(InStreamError(chunks=3, message="boom mid-stream"))
    chunks, error = await chunks_then_error(client, openai.APIError)
    assert type(error) is openai.APIError  # not APIStatusError / APIConnectionError
    assert error.message == "boom mid-stream"
    assert error.body == {"message": "boom mid-stream", "type": "server_error", "param": None, "code": None}
    assert error.type == "server_error"
    assert error.code is None
    assert not hasattr(error, "status_code")
    assert contents(chunks) == ["", *WORDS[:3]]


async def test_status_429_with_retry_after(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(Status(429, retry_after=1))
    with pytest.raises(openai.RateLimitError) as info:
        async with asyncio.timeout(3):
            await open_stream(client)
    error = info.value
    assert error.status_code == 429
    assert error.response.headers["retry-after"] == "1"
    assert error.response.headers["retry-after-ms"] == "1000"
    assert isinstance(error.body, dict)
    assert error.body["type"] == "requests"
    assert error.code == "rate_limit_exceeded"


@pytest.mark.parametrize(
    ("status", "exc_type", "error_type"),
    [
        (500, openai.InternalServerError, "server_error"),
        (503, openai.InternalServerError, "server_error"),
        (400, openai.BadRequestError, "invalid_request_error"),
        (401, openai.AuthenticationError, "invalid_request_error"),
    ],
)
async def test_status_errors(
    fake: FakeOpenAI,
    client: openai.AsyncOpenAI,
    status: int,
    exc_type: type[openai.APIStatusError],
    error_type: str,
) -> None:
    fake.enqueue(Status(status, message="nope"))
    with pytest.raises(exc_type) as info:
        async with asyncio.timeout(3):
            await open_stream(client)
    assert info.value.status_code == status
    assert info.value.body == {"message": "nope", "type": error_type, "param": None, "code": None}
    assert "retry-after" not in info.value.response.headers


async def test_queue_is_fifo_and_sdk_retry_honours_retry_after(fake: FakeOpenAI) -> None:
    fake.enqueue(Status(429, retry_after=0.1), Reply(text="second try"))
    retrying = openai.AsyncOpenAI(api_key="test", base_url=fake.base_url, max_retries=1, timeout=5.0)
    try:
        async with asyncio.timeout(5):
            start = time.monotonic()
            completion = await retrying.chat.completions.create(model="gpt-test", messages=MESSAGES)
            elapsed = time.monotonic() - start
        assert completion.choices[0].message.content == "second try"
        assert elapsed >= 0.09
        assert [r.headers["x-stainless-retry-count"] for r in fake.requests] == ["0", "1"]
        assert [type(r.scenario) for r in fake.requests] == [Status, Reply]
        assert fake.pending == 0
        # Queue empty: the default scenario answers.
        async with asyncio.timeout(5), await open_stream(retrying) as stream:
            assert "".join(contents([c async for c in stream])) == DEFAULT_TEXT
        assert fake.requests[-1].scenario == Reply()
    finally:
        await retrying.close()


@pytest.mark.parametrize(
    ("scenario", "exc_type", "cause_type"),
    [
        (CloseWithoutDone(chunks=1), openai.APIConnectionError, httpx2.RemoteProtocolError),
        (Reset(chunks=1), openai.APIConnectionError, httpx2.ReadError),
        (InStreamError(chunks=1), openai.InternalServerError, None),  # raised `from None`
        (MalformedChunk(chunks=1), json.JSONDecodeError, None),
    ],
)
async def test_faults_on_non_streaming_requests(
    fake: FakeOpenAI,
    client: openai.AsyncOpenAI,
    scenario: Scenario,
    exc_type: type[Exception],
    cause_type: type[Exception] | None,
) -> None:
    fake.enqueue(scenario)
    with pytest.raises(exc_type) as info:
        async with asyncio.timeout(3):
            await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    if cause_type is not None:
        assert isinstance(info.value.__cause__, cause_type)


# --------------------------------------------------------------------------------------------
# Recording, connections, shutdown
# --------------------------------------------------------------------------------------------


async def test_requests_are_recorded(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    async with asyncio.timeout(5), await open_stream(client) as stream:
        [_ async for _ in stream]
    await fake.wait_for_requests(1)
    request = fake.requests[0]
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer test"
    assert request.headers["content-type"] == "application/json"
    assert all(name == name.lower() for name in request.headers)
    assert request.json == {
        "model": "gpt-test",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert request.scenario == Reply()


async def test_chat_requests_leave_other_routes_out_and_each_request_notes_when_it_arrived(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    before = time.monotonic()
    await client.models.list()
    await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    after = time.monotonic()
    assert [r.path for r in fake.requests] == ["/v1/models", "/v1/chat/completions", "/v1/chat/completions"]
    assert fake.chat_requests == fake.requests[1:]
    arrivals = [r.received_at for r in fake.requests]
    assert before <= arrivals[0] <= arrivals[1] <= arrivals[2] <= after


async def test_wait_for_requests_times_out(fake: FakeOpenAI) -> None:
    with pytest.raises(TimeoutError):
        await fake.wait_for_requests(1, timeout=0.1)


async def test_break_does_not_close_but_stream_close_does(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(Reply(delay_s=0.05))
    async with asyncio.timeout(5):
        stream = await open_stream(client)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        await asyncio.sleep(0.2)
        assert fake.open_connections == 1  # the SDK kept the socket after `break`
        await stream.close()
        await fake.wait_for_open_connections(0, timeout=2)


async def test_cancelled_consumer_closes_socket(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.enqueue(Reply(delay_s=0.05))
    seen = asyncio.Event()

    async def consume() -> None:
        stream = await open_stream(client)
        async for _ in stream:
            seen.set()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(3):
        await seen.wait()
    assert fake.open_connections == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake.wait_for_open_connections(0, timeout=2)


async def test_stop_closes_stalled_sockets() -> None:
    fake = FakeOpenAI(default=StallBeforeHeaders())
    await fake.start()
    client = openai.AsyncOpenAI(api_key="test", base_url=fake.base_url, max_retries=0, timeout=5.0)
    fake.enqueue(StallBeforeHeaders(), StallAfter(chunks=1))

    async def stalled_create() -> None:
        await open_stream(client)

    async def stalled_stream() -> None:
        await fake.wait_for_requests(1)  # keep the order of the two requests deterministic
        async with await open_stream(client) as stream:
            [_ async for _ in stream]

    try:
        tasks = [asyncio.create_task(stalled_create()), asyncio.create_task(stalled_stream())]
        await fake.wait_for_requests(2)
        await asyncio.sleep(0.1)
        assert fake.open_connections == 2
        start = time.monotonic()
        await fake.stop()
        assert time.monotonic() - start < 1
        assert fake.open_connections == 0
        async with asyncio.timeout(3):
            results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await fake.stop()
        await client.close()
    # The SDK reports the dropped connections as connection errors.
    for result in results:
        assert isinstance(result, openai.APIConnectionError), result
        assert isinstance(result.__cause__, httpx2.RemoteProtocolError), result.__cause__
    assert fake.errors == []


def test_split_words_round_trips() -> None:
    for text in ["", "one", "  lead and trail  ", "a\nb\tc", DEFAULT_TEXT, "   "]:
        assert "".join(split_words(text)) == text
    assert split_words("Hello  big world") == ["Hello  ", "big ", "world"]
