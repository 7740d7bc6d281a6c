"""The lean upstream path (our request encoding and SSE parsing on the SDK's client) against the
plain SDK path: the same fault scripts of the fake OpenAI server through both, the same pieces and
the same errors (class, code, message, status, retry-after), fault by fault."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai._streaming import SSEDecoder  # the SDK's own decoder: the reference for ours

from llm.base import Piece, ReplyRequest
from llm.exceptions import UpstreamError
from llm.openai_provider import OpenAIProvider, StreamParser, _sse_data
from testkit import T
from testkit.fake_openai import (
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
)

pytestmark = pytest.mark.timeout(20)

READ_TIMEOUT_S = 0.3 * T
REQUEST = ReplyRequest(
    brand_id="demo",
    messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi ☕"}],
    max_tokens=64,
    model="fake-model",
    temperature=0.5,
)

FAULTS: dict[str, Scenario] = {
    "reply": Reply(text="We roast on Mondays, ship by Tuesday — café ☕ and all."),
    "reply-with-length-cut": Reply(text="Cut off in the mid", finish_reason="length"),
    "no-usage-chunk": Reply(text="No usage follows.", include_usage=False),
    "usage-only-chunk-with-empty-choices": Reply(text="Usage follows.", include_usage=True),
    "empty-reply": Reply(text=""),
    "slow-drip": Reply(text="one two three", delay_s=0.02 * T),
    "stall-before-headers": StallBeforeHeaders(),
    "stall-after-chunks": StallAfter(chunks=2),
    "close-without-done": CloseWithoutDone(chunks=2),
    "reset": Reset(chunks=2),
    "malformed-chunk": MalformedChunk(chunks=2),
    "malformed-half-event": MalformedChunk(chunks=1, garbage='data: {"choices": [{"delta": {"content": "x"'),
    "comment-and-unknown-fields": MalformedChunk(chunks=1, garbage=": keep-alive\nfoo: bar\n\n"),
    "in-stream-error": InStreamError(chunks=3, message="boom mid-stream"),
    "in-stream-error-without-message": MalformedChunk(chunks=1, garbage='data: {"error": {"code": 1}}\n\n'),
    "429-with-retry-after": Status(429, retry_after=1),
    "500": Status(500),
    "400": Status(400),
}


async def read_reply(
    provider: OpenAIProvider, request: ReplyRequest = REQUEST
) -> tuple[list[Piece], UpstreamError | None]:
    """The pieces until the end or the first error, and that error."""
    pieces: list[Piece] = []
    try:
        async with asyncio.timeout(5 * T):
            iterator = await provider.open_reply(request)
            try:
                async for piece in iterator:
                    pieces.append(piece)
            finally:
                await iterator.aclose()  # type: ignore[attr-defined]
    except UpstreamError as exc:
        return pieces, exc
    return pieces, None


async def run(fake: FakeOpenAI, parser: StreamParser, scenario: Scenario) -> tuple[list[Piece], tuple[Any, ...] | None]:
    """Pieces until the end or the first error, and the error as (class, code, message, status, retry_after_s)."""
    fake.enqueue(scenario)
    provider = _provider(fake, parser)
    try:
        pieces, exc = await read_reply(provider)
    finally:
        await provider.close()
    await fake.wait_for_open_connections(0, timeout=2 * T)
    return pieces, _error(exc)


def _error(exc: UpstreamError | None) -> tuple[Any, ...] | None:
    """What is compared of an error: class, code, message, status, retry-after, retryable."""
    return (type(exc), exc.code, exc.message, exc.status, exc.retry_after_s, exc.retryable) if exc else None


def _provider(fake: FakeOpenAI, parser: StreamParser) -> OpenAIProvider:
    return OpenAIProvider(
        api_key="test",
        base_url=fake.base_url,
        model="fake-model",
        connect_timeout_s=READ_TIMEOUT_S,
        read_timeout_s=READ_TIMEOUT_S,
        stream_parser=parser,
    )


@pytest.mark.parametrize("parser", ["lean", "wire"])
@pytest.mark.parametrize("fault", list(FAULTS))
async def test_the_lean_and_wire_paths_yield_the_same_pieces_and_errors_as_the_sdk_for_every_fault(
    fake: FakeOpenAI, fault: str, parser: StreamParser
) -> None:
    ours = await run(fake, parser, FAULTS[fault])
    sdk = await run(fake, "sdk", FAULTS[fault])
    assert ours == sdk
    assert ours[0] or ours[1], "the script produced something to compare"


def test_the_wire_path_yields_the_same_pieces_and_errors_as_the_sdk_for_every_fault_on_uvloop() -> None:
    """The server runs on uvloop (uvicorn picks it when installed), whose transports differ from asyncio's."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        async with FakeOpenAI() as fake:
            for fault, scenario in FAULTS.items():
                wire = await run(fake, "wire", scenario)
                sdk = await run(fake, "sdk", scenario)
                assert wire == sdk, fault
            assert fake.errors == []

    uvloop.run(main())


@pytest.mark.parametrize("parser", ["lean", "wire"])
async def test_the_lean_and_wire_paths_send_the_request_the_sdk_sends(fake: FakeOpenAI, parser: StreamParser) -> None:
    await run(fake, parser, Reply(text="a"))
    await run(fake, "sdk", Reply(text="a"))
    ours, sdk = fake.chat_requests
    assert (ours.method, ours.path, ours.json) == (sdk.method, sdk.path, sdk.json)  # the same body, keys reordered
    assert ours.json is not None and ours.json["stream_options"] == {"include_usage": True}
    # Every header but the per-request ones (the SDK's stream path sends no idempotency key either).
    assert ours.headers == sdk.headers


class _Body:
    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    async def aiter_bytes(self) -> Any:
        for part in self.parts:
            yield part


def _reference(parts: list[bytes]) -> list[str]:
    decoder = SSEDecoder()

    async def go() -> list[str]:
        return [sse.data async for sse in decoder.aiter_bytes(_Body(parts).aiter_bytes())]

    return asyncio.run(go())


SSE_TEXT = (
    'data: {"choices": [{"delta": {"content": "caf\u00e9 \u2615"}}]}\r\n\r\n'
    ": a comment\n"
    "event: ping\nid: 7\nretry: 10\n\n"
    'data: {"a":\ndata: 1}\r\r'
    "data:no-space\n\n"
    "data: [DONE]\n\n"
    "data: trailing without a blank line"
)


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(SSE_TEXT.encode()) + 1), max_size=12))
def test_sse_parsing_matches_the_sdk_with_bytes_split_mid_line_and_mid_utf8(cuts: list[int]) -> None:
    raw = SSE_TEXT.encode()
    points = sorted({c % (len(raw) + 1) for c in cuts} | {0, len(raw)})
    parts = [raw[a:b] for a, b in itertools.pairwise(points) if b > a]

    async def ours() -> list[str]:
        return [d.decode() async for d in _sse_data(_Body(parts))]

    assert asyncio.run(ours()) == _reference(parts)


# --- the SDK's request, built once per client and sent again with each body (wire path) ---------------


def _asking(text: str) -> ReplyRequest:
    return ReplyRequest(
        brand_id="demo", messages=[{"role": "user", "content": text}], max_tokens=64, model="fake-model"
    )


async def test_every_request_of_one_client_carries_what_the_sdk_would_send_for_it(fake: FakeOpenAI) -> None:
    """After the first request, the wire path sends the SDK's request again with each new body: every one
    must still be what the SDK itself sends for that body (headers, Content-Length, body)."""
    wire, sdk = _provider(fake, "wire"), _provider(fake, "sdk")
    try:
        for text in ("Hi", "A longer question, with more bytes in its body ☕", "Short"):
            for upstream in (wire, sdk):
                fake.enqueue(Reply(text="ok"))
                assert await read_reply(upstream, _asking(text)) == ([Piece("ok"), Piece("", "stop")], None)
        assert wire._template is not None, "the later requests were sent from the first one's template"
    finally:
        await wire.close()
        await sdk.close()
    requests = fake.chat_requests
    assert len(requests) == 6
    for ours, theirs in zip(requests[::2], requests[1::2], strict=True):
        assert (ours.method, ours.path, ours.json) == (theirs.method, theirs.path, theirs.json)
        assert ours.headers == theirs.headers  # content-length included


async def test_an_sdk_that_builds_each_request_differently_builds_every_request(fake: FakeOpenAI) -> None:
    """A header the SDK makes per request (here its idempotency key, which chat completions do not send
    today) is seen on the first request, built twice: from then on every request is the SDK's own."""
    wire = _provider(fake, "wire")
    wire._client._idempotency_header = "Idempotency-Key"
    try:
        for text in ("one", "two", "three"):
            fake.enqueue(Reply(text="ok"))
            assert (await read_reply(wire, _asking(text)))[1] is None
        assert wire._template is None
    finally:
        await wire.close()
    keys = [r.headers.get("idempotency-key") for r in fake.chat_requests]
    assert None not in keys and len(set(keys)) == 3, keys


async def test_the_wire_path_gives_the_sdks_pieces_and_errors_for_every_fault_on_one_client(fake: FakeOpenAI) -> None:
    """The fault comparison above with one client for all the faults: every request after the first is
    sent from the template (status errors are made from it as from the SDK's request)."""
    wire, sdk = _provider(fake, "wire"), _provider(fake, "sdk")

    async def one(upstream: OpenAIProvider, scenario: Scenario) -> tuple[list[Piece], tuple[Any, ...] | None]:
        fake.enqueue(scenario)
        pieces, exc = await read_reply(upstream)
        await fake.wait_for_open_connections(0, timeout=2 * T)
        return pieces, _error(exc)

    try:
        for fault, scenario in FAULTS.items():
            assert await one(wire, scenario) == await one(sdk, scenario), fault
        assert wire._template is not None
    finally:
        await wire.close()
        await sdk.close()
