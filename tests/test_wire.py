"""The wire client (llm/wire.py) on real sockets: keep-alive reuse, abandoned responses closing their
socket, HTTP framings split at awkward byte boundaries (compared with the SDK on the same bytes), and
the fall back to httpx2 when a proxy applies. The fault-by-fault comparison with the SDK is in
tests/test_lean_upstream.py."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
import os
import resource
import socket
import time
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import httpx2
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import llm.wire as wire_module
from llm.base import ReplyRequest
from llm.exceptions import UpstreamRateLimited, UpstreamTimeout
from llm.openai_provider import OpenAIProvider, StreamParser
from llm.wire import DRAIN_S, ChunkedDecoder
from testkit import T, examples
from testkit.fake_openai import DEFAULT_TEXT, FakeOpenAI, Reply, StallBeforeHeaders, Status
from testkit.tcp import TcpServer
from tests.test_lean_upstream import read_reply

pytestmark = pytest.mark.timeout(30)

REQUEST = ReplyRequest(brand_id="demo", messages=[{"role": "user", "content": "Hi"}], max_tokens=16, model="m")
TIMEOUT_S = 0.5 * T


def provider(base_url: str, parser: StreamParser = "wire") -> OpenAIProvider:
    return OpenAIProvider(
        api_key="test",
        base_url=base_url,
        model="fake-model",
        connect_timeout_s=TIMEOUT_S,
        read_timeout_s=TIMEOUT_S,
        stream_parser=parser,
    )


async def reply(upstream: OpenAIProvider) -> tuple[str, tuple[Any, ...] | None]:
    """The reply's text and finish reason, or the error as (class, code, message, status, retry-after)."""
    pieces, exc = await read_reply(upstream, REQUEST)
    if exc is not None:
        return "".join(p.text for p in pieces), (type(exc), exc.code, exc.message, exc.status, exc.retry_after_s)
    return "".join(p.text for p in pieces), (pieces[-1].finish_reason,)


async def wait_until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(2 * T):
        while not predicate():
            await asyncio.sleep(0.005)


# --- keep-alive ---------------------------------------------------------------------------------------


async def test_a_connection_kept_alive_is_reused_for_the_next_requests_even_after_an_error_status() -> None:
    async with FakeOpenAI(keep_alive=True) as fake:
        fake.enqueue(Reply(text="one two"), Status(500), Reply(text="three"))
        upstream = provider(fake.base_url)
        wire = upstream._wire
        assert wire is not None
        try:
            assert await reply(upstream) == ("one two", ("stop",))
            await wait_until(lambda: wire.idle_connections() == 1)  # once the terminator after [DONE] is in
            status = await reply(upstream)
            assert status[1] is not None and status[1][3] == 500
            assert wire.idle_connections() == 1  # an error body read whole: the connection is clean
            assert await reply(upstream) == ("three", ("stop",))
            assert fake.connections_accepted == 1
            assert len(fake.chat_requests) == 3
        finally:
            await upstream.close()
        await fake.wait_for_open_connections(0, timeout=2 * T)


async def test_a_connection_the_server_closes_is_not_reused() -> None:
    async with FakeOpenAI() as fake:  # Connection: close on every response
        upstream = provider(fake.base_url)
        assert upstream._wire is not None
        try:
            assert (await reply(upstream))[1] == ("stop",)
            assert (await reply(upstream))[1] == ("stop",)
            assert upstream._wire.idle_connections() == 0
            assert fake.connections_accepted == 2
        finally:
            await upstream.close()
        await fake.wait_for_open_connections(0, timeout=2 * T)


async def test_idle_connections_past_the_keep_alive_expiry_are_closed_not_only_the_one_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wire_module, "KEEPALIVE_EXPIRY_S", 0.6 * T)
    async with FakeOpenAI(keep_alive=True) as fake:
        fake.enqueue(*(Reply(text=word) for word in ("one", "two", "three", "four")))
        upstream = provider(fake.base_url)
        assert upstream._wire is not None
        wire = upstream._wire
        try:
            await asyncio.gather(reply(upstream), reply(upstream))  # two at once: two connections, A and B
            await wait_until(lambda: wire.idle_connections() == 2)
            await asyncio.sleep(0.4 * T)
            assert (await reply(upstream))[1] == ("stop",)  # on B, the most recent: B is idle anew, A is not
            await wait_until(lambda: wire.idle_connections() == 2)
            await asyncio.sleep(0.3 * T)  # A idle past the expiry, B not
            assert (await reply(upstream))[1] == ("stop",)  # on B again
            assert fake.connections_accepted == 2
            await fake.wait_for_open_connections(1, timeout=2 * T)  # A was closed when B was taken
        finally:
            await upstream.close()


async def test_keep_alive_still_works_when_the_process_has_more_than_1024_descriptors() -> None:
    # select() cannot watch a descriptor numbered 1024 or more; the check before reuse must not use it.
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        pytest.skip(f"the descriptor limit ({soft}) is too low to open descriptors past 1024")
    spare = [os.dup(0) for _ in range(1100)]
    try:
        async with FakeOpenAI(keep_alive=True) as fake:
            fake.enqueue(Reply(text="one"), Reply(text="two"))
            upstream = provider(fake.base_url)
            assert upstream._wire is not None
            wire = upstream._wire
            try:
                assert (await reply(upstream))[1] == ("stop",)
                await wait_until(lambda: wire.idle_connections() == 1)
                assert (await reply(upstream))[1] == ("stop",)
                assert fake.connections_accepted == 1
            finally:
                await upstream.close()
    finally:
        for fd in spare:
            os.close(fd)


class LargeBody(TcpServer):
    """Answers every request on a connection with a body a little over the read buffer's high-water mark,
    its last part sent once the first has arrived: the read that completes the body crosses the mark."""

    BODY = b"x" * (wire_module.HIGH_WATER_BYTES + 100)

    def __init__(self) -> None:
        super().__init__()
        self.closed = asyncio.Event()  # the client closed its connection, and so did we

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(self.BODY)
                writer.write(head + self.BODY[: len(self.BODY) - 60_000])
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.write(self.BODY[len(self.BODY) - 60_000 :])
                await writer.drain()
        writer.close()
        self.closed.set()


async def test_a_response_whose_body_ended_unread_leaves_a_connection_that_can_be_read_again() -> None:
    async with LargeBody() as server:
        client = wire_module.WireClient()
        url = f"http://127.0.0.1:{server.port}/"
        timeouts = {"timeout": {"connect": 2 * T, "read": 1 * T, "write": None, "pool": None}}
        try:
            first = await client.send(httpx2.Request("GET", url, extensions=timeouts))
            await wait_until(lambda: first._conn.complete)  # the whole body arrived; the caller read none of it
            first.close()
            async with asyncio.timeout(3 * T):
                second = await client.send(httpx2.Request("GET", url, extensions=timeouts))
                assert len(await second.aread()) == len(LargeBody.BODY)
        finally:
            await client.aclose()
        await asyncio.wait_for(server.closed.wait(), 2 * T)


# --- abandoned responses ------------------------------------------------------------------------------

SLOW = Reply(text=" ".join(f"w{i}" for i in range(40)), delay_s=0.02 * T)


async def test_a_response_abandoned_mid_stream_closes_its_socket() -> None:
    async with FakeOpenAI(keep_alive=True) as fake:
        fake.enqueue(SLOW)
        upstream = provider(fake.base_url)
        try:
            iterator = await upstream.open_reply(REQUEST)
            assert (await anext(iterator)).text  # type: ignore[call-overload]
            await fake.wait_for_open_connections(1, timeout=2 * T)
            await iterator.aclose()  # type: ignore[attr-defined]
            await fake.wait_for_open_connections(0, timeout=2 * T)  # closed, not pooled
            assert upstream._wire is not None and upstream._wire.idle_connections() == 0
        finally:
            await upstream.close()


async def cancel_then_all_closed(task: asyncio.Task[Any], fake: FakeOpenAI) -> None:
    """Cancel ``task``, let it end, and wait until the fake sees no connection open."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await fake.wait_for_open_connections(0, timeout=2 * T)


async def test_a_task_cancelled_mid_stream_closes_its_socket() -> None:
    async with FakeOpenAI(keep_alive=True) as fake:
        fake.enqueue(SLOW)
        upstream = provider(fake.base_url)
        got: list[str] = []

        async def consume() -> None:
            async for piece in await upstream.open_reply(REQUEST):
                got.append(piece.text)

        try:
            task = asyncio.create_task(consume())
            await wait_until(lambda: len(got) >= 2)
            await cancel_then_all_closed(task, fake)
        finally:
            await upstream.close()


async def test_a_task_cancelled_before_the_headers_closes_its_socket() -> None:
    async with FakeOpenAI(keep_alive=True) as fake:
        fake.enqueue(StallBeforeHeaders())
        upstream = provider(fake.base_url)
        try:
            task = asyncio.create_task(upstream.open_reply(REQUEST))
            await fake.wait_for_requests(1, timeout=2 * T)
            await cancel_then_all_closed(task, fake)
        finally:
            await upstream.close()


# --- framing, split anywhere --------------------------------------------------------------------------


def _chunked(payload: bytes, sizes: list[int], extensions: bool, trailers: bool) -> bytes:
    return b"".join(_chunks(payload, sizes, extensions, trailers))


def _chunks(payload: bytes, sizes: list[int], extensions: bool, trailers: bool) -> list[bytes]:
    out, pos = [], 0
    for size in itertools.cycle(sizes or [len(payload) or 1]):
        if pos >= len(payload):
            break
        part = payload[pos : pos + size]
        pos += size
        out.append(b"%x%s\r\n%s\r\n" % (len(part), b";name=value" if extensions else b"", part))
    out.append(b"0\r\n" + (b"X-Trailer: yes\r\n" if trailers else b"") + b"\r\n")
    return out


@settings(max_examples=300, deadline=None)
@given(
    payload=st.binary(max_size=300),
    sizes=st.lists(st.integers(min_value=1, max_value=40), max_size=5),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
    extensions=st.booleans(),
    trailers=st.booleans(),
)
def test_the_chunked_decoder_gives_the_body_back_however_the_bytes_are_split(
    payload: bytes, sizes: list[int], cuts: list[int], extensions: bool, trailers: bool
) -> None:
    raw = _chunked(payload, sizes, extensions, trailers) + b"NEXT"
    points = sorted({c % (len(raw) + 1) for c in cuts} | {0, len(raw)})
    decoder = ChunkedDecoder()
    data: list[bytes] = []
    rest = b""
    for a, b in itertools.pairwise(points):
        if decoder.done:
            rest += raw[a:b]
        else:
            data.extend(decoder.feed(raw[a:b]))
    assert decoder.done
    assert b"".join(data) == payload
    assert decoder.extra + rest == b"NEXT"


@settings(max_examples=100, deadline=None)
@given(
    payload=st.binary(max_size=300),
    sizes=st.lists(st.integers(min_value=1, max_value=40), max_size=5),
    extensions=st.booleans(),
)
def test_the_chunked_decoder_gives_the_body_back_fed_one_whole_chunk_at_a_time(
    payload: bytes, sizes: list[int], extensions: bool
) -> None:
    decoder = ChunkedDecoder()
    data: list[bytes] = []
    for chunk in _chunks(payload, sizes, extensions, trailers=False):  # the usual read: one event per chunk
        assert not decoder.done
        data.extend(decoder.feed(chunk))
    assert decoder.done and decoder.extra == b""
    assert b"".join(data) == payload


@pytest.mark.parametrize("chunk", [b"5\r\nabcde\r\n\r\n", b"5\r\nabcdeXY", b"0x5\r\nabcde\r\n", b" 5\r\nabcde\r\n"])
def test_the_chunked_decoder_refuses_what_h11_refuses(chunk: bytes) -> None:
    with pytest.raises(httpx2.RemoteProtocolError):
        ChunkedDecoder().feed(chunk)


class RawUpstream(TcpServer):
    """A server that answers every request with the given response bytes, written in the given pieces
    (one write each, the loop run between them), then closes: HTTP at the byte level, for framings
    the fake OpenAI server never sends."""

    def __init__(self, pieces: list[bytes], *, hold: bool = False) -> None:
        super().__init__()
        self.pieces = pieces
        self.hold = hold  # after the pieces, keep the socket open until the client closes it
        self.client_closed = asyncio.Event()
        self.heads: list[bytes] = []  # the request heads received

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            await reader.readexactly(length)
            for piece in self.pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0)
            if self.hold:
                while await reader.read(1024):
                    pass
                self.client_closed.set()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def _sse(words: list[str]) -> bytes:
    events = [b'data: {"choices":[{"delta":{"content":"%s"},"finish_reason":null}]}\n\n' % w.encode() for w in words]
    events.append(b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
    return b"".join(events)


SSE = _sse(["caf\u00e9 ", "\u2615 ", "and ", "all"])
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
ERROR = b'{"error": {"message": "slow down", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}'


def _bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


RAW: dict[str, list[bytes]] = {
    "chunked-byte-by-byte": _bytewise(
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(SSE, [7, 1, 30], True, True)
    ),
    "chunked-in-one-write": [HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(SSE, [5], False, False)],
    "content-length": [HEAD + b"Content-Length: %d\r\n\r\n" % len(SSE) + SSE[:20], SSE[20:]],
    "until-close": [HEAD + b"\r\n" + SSE[:33], SSE[33:]],
    "interim-100-continue-first": [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        HEAD + b"Content-Length: %d\r\n\r\n" % len(SSE),
        SSE,
    ],
    "gzip": [
        HEAD + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(gzip.compress(SSE)),
        gzip.compress(SSE),
    ],
    "head-with-bare-lf-and-a-folded-header": [
        b"HTTP/1.1 200 OK\nContent-Type: text/event-stream\nX-Folded: a\n  b\nContent-Length: %d\n\n" % len(SSE) + SSE
    ],
    "header-split-in-crlf": [HEAD + b"Content-Length: %d\r\n\r" % len(SSE), b"\n" + SSE],
    "429-chunked": _bytewise(
        b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 2\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(ERROR, [9], False, False)
    ),
    "400-gzip": [
        b"HTTP/1.1 400 Bad Request\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(gzip.compress(ERROR)),
        gzip.compress(ERROR),
    ],
    "chunked-cut-short": [HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(SSE, [9], False, False)[:-30]],
    "content-length-cut-short": [HEAD + b"Content-Length: %d\r\n\r\n" % (len(SSE) + 10) + SSE],
    "content-length-cut-before-the-end": [HEAD + b"Content-Length: %d\r\n\r\n" % len(SSE) + SSE[:40]],
    "307-redirect-followed-by-httpx2-to-no-end": [
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /v1/chat/completions\r\nContent-Length: 0\r\n\r\n"
    ],
    "bad-chunk-size": [HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"],
    "garbage-status-line": [b"HTCPCP/1.0 418 I'm a teapot\r\n\r\n"],
    "nothing": [],
}


@pytest.mark.parametrize("name", list(RAW))
async def test_the_wire_path_reads_every_framing_split_anywhere_as_the_sdk_does(name: str) -> None:
    results = {}
    for parser in ("wire", "sdk"):
        async with RawUpstream(RAW[name]) as raw:
            upstream = provider(raw.base_url, parser)
            try:
                results[parser] = await reply(upstream)
            finally:
                await upstream.close()
    assert results["wire"] == results["sdk"]


# --- the response head, fed to the connection directly in pieces ---------------------------------------
# The tests above go through real sockets, where the kernel may merge the writes of a byte-at-a-time
# server: these feed ``_Connection.data_received`` itself, so that every split drawn is the split read.


class _Transport:
    """What a ``_Connection`` calls on its transport; once aborted (as a real one) it delivers nothing more."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _Pool:
    """The pool side of a connection (``WireClient``'s ``release`` and ``forget``), not under test here."""

    def release(self, conn: wire_module._Connection) -> None:
        conn.close()

    def forget(self, conn: wire_module._Connection) -> None:
        pass


def _pieces(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(raw) + 1) for c in cuts} | {0, len(raw)})
    return [raw[a:b] for a, b in itertools.pairwise(points) if b > a]


def _read_response(pieces: list[bytes], *, eof: bool = False) -> tuple[Any, ...]:
    """Feed ``pieces`` to a fresh connection, one ``data_received`` each (and then the end, if ``eof``):
    what it made of them (the head's fields, the body, complete, reusable, the error) and whether the
    transport was aborted."""

    async def main() -> tuple[Any, ...]:
        conn = wire_module._Connection(cast(wire_module.WireClient, _Pool()), ("http", "upstream.test", 80))
        transport = _Transport()
        conn.connection_made(cast(asyncio.Transport, transport))
        conn.start(b"GET / HTTP/1.1\r\nHost: upstream.test\r\n\r\n", read_timeout=60.0)  # (a watchdog timer set)
        for piece in pieces:
            if transport.aborted:  # a real transport reads no more once aborted
                break
            conn.data_received(piece)
        if eof and not transport.aborted:
            conn.eof_received()
        head = conn.head
        outcome = (
            None
            if head is None
            else (
                *(head.version, head.status, head.reason, head.raw),
                *(head.content_length, head.transfer_encoding, head.connection, sorted(head.other)),
            ),
            b"".join(conn.body),
            conn.complete,
            conn.reusable,
            None if conn.error is None else (type(conn.error), str(conn.error)),
            transport.aborted,
        )
        conn.close()  # the watchdog timer cancelled
        return outcome

    return asyncio.run(main())


class Framing(NamedTuple):
    raw: bytes
    status: int
    body: bytes
    reusable: bool
    cuts: tuple[int, ...] = ()  # cut points every split has (besides those drawn)
    eof: bool = False  # the server closes after the bytes


_OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 11\r\n"
_CRLF_END = len(_OK_HEAD) + 2  # where the \r\n\r\n that ends _OK_HEAD + b"\r\n" ends
FRAMINGS: dict[str, Framing] = {
    "content-length": Framing(_OK_HEAD + b"\r\nhello world", 200, b"hello world", reusable=True),
    "chunked-with-extensions-and-a-trailer": Framing(
        HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(b"hello chunked world", [5, 1, 7], True, True),
        200,
        b"hello chunked world",
        reusable=True,
    ),
    "100-continue-and-103-early-hints-then-the-head": Framing(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nLink: </app.js>; rel=preload\r\n\r\n"
        + _OK_HEAD
        + b"\r\nhello world",
        200,
        b"hello world",
        reusable=True,
    ),
    "bare-lf-and-folded-header-lines": Framing(
        b"HTTP/1.1 200 OK\nX-Folded: a\n  b\n\tc\nContent-Length: 11\n\nhello world", 200, b"hello world", True
    ),
    "crlf-split-at-the-end-of-the-head": Framing(
        _OK_HEAD + b"\r\nhello world",
        200,
        b"hello world",
        reusable=True,
        cuts=(_CRLF_END - 3, _CRLF_END - 2, _CRLF_END - 1, _CRLF_END),
    ),
    "connection-close-and-no-body": Framing(
        b"HTTP/1.1 204 No Content\r\nConnection: keep-alive, close\r\n\r\n", 204, b"", reusable=False
    ),
    "http-1.0-read-until-close": Framing(
        b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nto the end", 200, b"to the end", False, eof=True
    ),
    "429-chunked": Framing(
        b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 2\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(ERROR, [9], False, False),
        429,
        ERROR,
        reusable=True,
    ),
}


@pytest.mark.parametrize("name", list(FRAMINGS))
@settings(max_examples=examples(100), deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=2**16), max_size=20))
@example(cuts=list(range(1, 400)))  # one byte at a time
def test_the_connection_reads_a_response_split_anywhere_as_it_reads_it_in_one_piece(name: str, cuts: list[int]) -> None:
    framing = FRAMINGS[name]
    whole = _read_response([framing.raw], eof=framing.eof)
    head, body, complete, reusable, error, aborted = whole
    assert error is None and not aborted
    assert head is not None and head[1] == framing.status
    assert (body, complete, reusable) == (framing.body, True, framing.reusable)
    assert _read_response(_pieces(framing.raw, [*cuts, *framing.cuts]), eof=framing.eof) == whole


def test_the_connection_reads_the_headers_of_interest_from_the_head() -> None:
    # What the split tests above compare, checked once for its values: framing headers, folded lines.
    head = _read_response([FRAMINGS["bare-lf-and-folded-header-lines"].raw])[0]
    assert head == (
        b"HTTP/1.1",
        200,
        b"OK",
        [(b"X-Folded", b"a b c"), (b"Content-Length", b"11")],
        11,
        None,
        b"",
        [b"x-folded"],
    )
    head = _read_response([FRAMINGS["chunked-with-extensions-and-a-trailer"].raw])[0]
    assert head[4:7] == (None, b"chunked", b"")
    head = _read_response([FRAMINGS["connection-close-and-no-body"].raw])[0]
    assert head[6] == b",keep-alive, close"


def _head_of(size: int) -> bytes:
    """A response head (status line to the blank line that ends it, included) of exactly ``size`` bytes."""
    start, end = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Padding: ", b"\r\n\r\n"
    return start + b"p" * (size - len(start) - len(end)) + end


@settings(max_examples=examples(60), deadline=None)
@given(
    excess=st.sampled_from([1, 2, 3, 100, 5000]),
    interim=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=2**17), max_size=8),
)
def test_a_head_longer_than_the_limit_fails_however_it_is_split(excess: int, interim: bool, cuts: list[int]) -> None:
    raw = (
        (b"HTTP/1.1 100 Continue\r\n\r\n" if interim else b"")
        + _head_of(wire_module.MAX_HEAD_BYTES + excess)
        + b"hello"
    )
    head, body, complete, _, error, aborted = _read_response(_pieces(raw, cuts))
    assert (head, body, complete) == (None, b"", False)  # no head accepted, not even a part of one
    assert error is not None and error[0] is httpx2.RemoteProtocolError and aborted


@settings(max_examples=examples(40), deadline=None)
@given(interim=st.booleans(), cuts=st.lists(st.integers(min_value=0, max_value=2**17), max_size=8))
def test_a_head_at_the_limit_is_read_however_it_is_split(interim: bool, cuts: list[int]) -> None:
    raw = (b"HTTP/1.1 100 Continue\r\n\r\n" if interim else b"") + _head_of(wire_module.MAX_HEAD_BYTES) + b"hello"
    head, body, complete, reusable, error, _ = _read_response(_pieces(raw, cuts))
    assert error is None and head is not None and head[1] == 200
    assert (body, complete, reusable) == (b"hello", True, True)


MALFORMED_STATUS_LINES = [
    b"HTCPCP/1.0 418 I'm a teapot",
    b"HTTP/1.1 2000 OK",
    b"HTTP/1.1 20 OK",
    b"HTTP/1.1 OK 200",
    b"HTTP/1.1  200 OK",
    b"http/1.1 200 OK",
    b"HTTP/2 200",
    b"garbage",
    b"",
]


@pytest.mark.parametrize("line", MALFORMED_STATUS_LINES)
@settings(max_examples=examples(40), deadline=None)
@given(interim=st.booleans(), cuts=st.lists(st.integers(min_value=0, max_value=2**16), max_size=12))
@example(interim=True, cuts=list(range(1, 200)))  # one byte at a time
def test_a_malformed_status_line_fails_however_it_is_split(line: bytes, interim: bool, cuts: list[int]) -> None:
    raw = (b"HTTP/1.1 100 Continue\r\n\r\n" if interim else b"") + line + b"\r\nContent-Length: 5\r\n\r\nhello"
    head, body, complete, _, error, aborted = _read_response(_pieces(raw, cuts))
    assert (head, body, complete) == (None, b"", False)
    assert error is not None and error[0] is httpx2.RemoteProtocolError and aborted
    assert error == _read_response([raw])[4]  # the same error as in one piece


@pytest.mark.parametrize("parser", ["wire", "lean"])
async def test_a_cookie_the_upstream_sets_is_sent_back_on_the_next_request(parser: StreamParser) -> None:
    # As the SDK's httpx2 client keeps them (a CDN's bot-management cookie in front of the API, say).
    response = HEAD + b"Set-Cookie: __cf_bm=abc; Path=/\r\nContent-Length: %d\r\n\r\n" % len(SSE) + SSE
    async with RawUpstream([response]) as raw:
        upstream = provider(raw.base_url, parser)
        try:
            assert (await reply(upstream))[1] == ("stop",)
            assert (await reply(upstream))[1] == ("stop",)
        finally:
            await upstream.close()
    first, second = raw.heads
    assert b"cookie:" not in first.lower()
    assert b"\r\ncookie: __cf_bm=abc\r\n" in second.lower()


async def test_a_body_that_does_not_end_after_done_is_closed_not_pooled() -> None:
    # [DONE] read, then neither the chunked terminator nor a close: drained for DRAIN_S, then closed.
    body = HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(SSE, [50], False, False)[: -len(b"0\r\n\r\n")]
    async with RawUpstream([body], hold=True) as raw:
        upstream = provider(raw.base_url)
        try:
            started = time.monotonic()
            assert (await reply(upstream))[1] == ("stop",)
            assert time.monotonic() - started < DRAIN_S  # the reply did not wait for the drain
            async with asyncio.timeout(DRAIN_S + 2 * T):
                await raw.client_closed.wait()
            assert upstream._wire is not None and upstream._wire.idle_connections() == 0
        finally:
            await upstream.close()


# --- where the wire client steps aside ----------------------------------------------------------------


async def test_a_proxy_in_the_environment_sends_the_request_through_httpx2(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeOpenAI() as proxy:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        upstream = provider("http://upstream.invalid/v1")  # only a proxy can reach it
        try:
            _, error = await reply(upstream)
        finally:
            await upstream.close()
        # The request went to the proxy, in a proxy's absolute form: httpx2 sent it, not the wire client
        # (which would have failed to resolve upstream.invalid).
        assert [r.path for r in proxy.requests] == ["http://upstream.invalid/v1/chat/completions"]
        assert error is not None and error[3] == 404


async def test_an_unreachable_upstream_fails_on_the_wire_path_as_on_the_sdk() -> None:
    async with FakeOpenAI() as fake:
        port = fake.port
    results = {}
    for parser in ("wire", "sdk"):
        upstream = provider(f"http://127.0.0.1:{port}/v1", parser)
        try:
            results[parser] = await reply(upstream)
        finally:
            await upstream.close()
    assert results["wire"] == results["sdk"]
    assert results["wire"][1] is not None and results["wire"][1][1] == "upstream_unavailable"


# --- connecting ---------------------------------------------------------------------------------------


async def test_the_next_address_is_tried_when_the_first_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeOpenAI() as fake:
        async with FakeOpenAI() as gone:
            closed_port = gone.port
        loop = asyncio.get_running_loop()
        real = loop.getaddrinfo

        async def two_addresses(host: Any, port: Any, **kwargs: Any) -> list[Any]:
            # The resolver names two addresses (as for a host with A and AAAA records): one refuses.
            infos = await real("127.0.0.1", fake.port, **kwargs)
            family, kind, proto, name, _ = infos[0]
            return [(family, kind, proto, name, ("127.0.0.1", closed_port)), *infos]

        monkeypatch.setattr(loop, "getaddrinfo", two_addresses)
        upstream = provider("http://upstream.test/v1")
        try:
            assert await reply(upstream) == (DEFAULT_TEXT, ("stop",))
        finally:
            await upstream.close()
        await fake.wait_for_open_connections(0, timeout=2 * T)


async def test_the_connect_timeout_bounds_a_connect_the_server_never_accepts() -> None:
    # A listening socket whose accept queue is full: the kernel drops further SYNs, the connect hangs.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
            results = {}
            for parser in ("wire", "sdk"):
                upstream = OpenAIProvider(
                    api_key="test",
                    base_url=f"http://127.0.0.1:{port}/v1",
                    model="fake-model",
                    connect_timeout_s=0.3 * T,
                    read_timeout_s=4 * T,  # far longer: the connect timeout is the one that fires
                    stream_parser=parser,
                )
                started = time.monotonic()
                try:
                    results[parser] = await reply(upstream)
                finally:
                    await upstream.close()
                assert time.monotonic() - started < 2 * T
        finally:
            for filler in fillers:
                filler.close()
    assert results["wire"] == results["sdk"]
    assert results["wire"][1] is not None and results["wire"][1][0] is UpstreamTimeout


def test_the_wire_path_runs_on_uvloop_as_the_server_does() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        async with FakeOpenAI(keep_alive=True) as fake:
            fake.enqueue(Reply(text="one two"), Status(429, retry_after=1), SLOW)
            upstream = provider(fake.base_url)
            try:
                assert await reply(upstream) == ("one two", ("stop",))
                wire = upstream._wire
                assert wire is not None
                await wait_until(lambda: wire.idle_connections() == 1)
                assert (await reply(upstream))[1] == (
                    UpstreamRateLimited,
                    "rate_limited",
                    "the model provider is rate limiting (429): Error code: 429 - The fake server answered with an "
                    "error status.",
                    429,
                    1.0,
                )
                iterator = await upstream.open_reply(REQUEST)
                assert (await anext(iterator)).text  # type: ignore[call-overload]
                await iterator.aclose()  # type: ignore[attr-defined]
                assert fake.connections_accepted == 1
            finally:
                await upstream.close()
            await fake.wait_for_open_connections(0, timeout=2 * T)

    uvloop.run(main())
