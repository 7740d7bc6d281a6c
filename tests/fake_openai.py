"""A fake OpenAI-compatible HTTP server for tests, able to misbehave at the socket level.

It is written directly on :func:`asyncio.start_server` and speaks HTTP/1.1 by hand, so that a
test can make the "model provider" stall, drip slowly, drop the connection, reset it, send
garbage or send errors exactly where it wants, and then check what the code under test did.

Usage::

    async with FakeOpenAI() as fake:
        fake.enqueue(StallAfter(chunks=3), Reply(text="second try works"))
        client = openai.AsyncOpenAI(api_key="test", base_url=fake.base_url, max_retries=0)
        ...
        await fake.wait_for_requests(2)
        assert fake.requests[0].json["stream"] is True

Routes (all under ``/v1``):

* ``POST /v1/chat/completions`` -- pops the next queued :data:`Scenario` (FIFO), or uses the
  server's ``default`` scenario when the queue is empty.  ``"stream": true`` in the JSON body
  selects an SSE answer (``Transfer-Encoding: chunked``, ``Content-Type: text/event-stream``);
  otherwise a ``chat.completion`` JSON body is sent.
* ``GET /v1/models`` -- a model list with the single model ``"fake-model"`` (readiness checks).
* anything else -- ``404`` with an OpenAI-style error body.

Every response carries ``Connection: close``: one request per TCP connection, which keeps
:attr:`FakeOpenAI.open_connections` easy to reason about (one open socket == one request that
is still in flight on the client side).

Every request is recorded in :attr:`FakeOpenAI.requests` as soon as its body has been read, i.e.
before the scenario starts, so ``wait_for_requests`` also works for stalled requests.

Fault scenarios are written for streaming requests.  When one is used for a non-streaming
request it is applied to the JSON body instead (see each class).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

__all__ = [
    "DEFAULT_TEXT",
    "FAKE_MODEL",
    "CloseWithoutDone",
    "FakeOpenAI",
    "InStreamError",
    "MalformedChunk",
    "RecordedRequest",
    "Reply",
    "Reset",
    "Scenario",
    "StallAfter",
    "StallBeforeHeaders",
    "Status",
    "split_words",
]

DEFAULT_TEXT = "Hello from the fake model. It streams word by word."
"""The reply text used when a scenario is given no ``text``."""

FAKE_MODEL = "fake-model"
"""The only model listed by ``GET /v1/models``; also used when a request names no model."""

_MAX_LINE = 64 * 1024
_MAX_HEADERS = 200
_MAX_BODY = 16 * 1024 * 1024

_REASONS: dict[int, str] = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A normal, well-behaved reply.  Also the "slow drip" fault, with ``delay_s``.

    Streaming: headers are sent at once; then, after ``first_delay_s`` (time to first token),
    a first chunk with ``delta: {"role": "assistant", "content": ""}`` and the first content
    chunk; one ``chat.completion.chunk`` per word of ``text`` (see :func:`split_words`),
    ``delay_s`` apart; a chunk with an empty delta and ``finish_reason``; then, if the request
    had ``stream_options.include_usage`` true, a usage-only chunk (``"choices": []``); then
    ``data: [DONE]`` and the chunked terminator.

    ``include_usage``: ``None`` follows the request; ``False`` is the "missing usage chunk" fault
    (the client asked for usage but never gets it); ``True`` sends the usage chunk even when
    the client did not ask.

    Non-streaming: after ``first_delay_s`` a ``chat.completion`` with the whole text and usage.
    """

    text: str = DEFAULT_TEXT
    delay_s: float = 0.0
    first_delay_s: float = 0.0
    include_usage: bool | None = None
    finish_reason: str = "stop"


@dataclass(frozen=True)
class StallBeforeHeaders:
    """Read the request, then send nothing at all (not even the status line).

    The socket is held open until the client closes it or the server stops.  This is what a
    hung upstream looks like to a client: ``create()`` itself never returns.
    """


@dataclass(frozen=True)
class StallAfter:
    """Send the headers, the role chunk and the first ``chunks`` content chunks, then go silent.

    The socket is held open (no more bytes, no close) until the client closes it or the server
    stops: a stream that stops producing tokens mid-reply.

    Non-streaming: the headers and the first half of the JSON body, then silence.
    """

    chunks: int
    text: str = DEFAULT_TEXT


@dataclass(frozen=True)
class CloseWithoutDone:
    """Send ``chunks`` content chunks, then end the HTTP response cleanly and close.

    The chunked-encoding terminator is sent, so at the HTTP level the response is complete,
    but there is no ``finish_reason`` chunk, no usage chunk and no ``data: [DONE]``: a reply
    truncated by a proxy or by an upstream that gave up.

    Non-streaming: ``Content-Length`` of the whole body, but only half of it, then close.
    """

    chunks: int
    text: str = DEFAULT_TEXT


@dataclass(frozen=True)
class Reset:
    """Send ``chunks`` content chunks, then abort the TCP connection with a RST.

    ``SO_LINGER`` is set to ``(on, 0)`` and the transport is aborted, so the kernel sends a RST
    instead of a FIN and the client sees "connection reset by peer", not a clean end of stream.
    ``pause_s`` is an optional wait between the last chunk and the RST.  It is not needed on
    Linux loopback (the client still reads the chunks that arrived before the RST), but gives
    the client time to act on the chunks first if a test wants that.

    Non-streaming: half of the JSON body, then the RST.
    """

    chunks: int
    text: str = DEFAULT_TEXT
    pause_s: float = 0.0


@dataclass(frozen=True)
class MalformedChunk:
    """After ``chunks`` content chunks, write ``garbage`` raw, then go on normally to ``[DONE]``.

    The default garbage is an SSE event whose data is not JSON.  ``garbage`` is written as one
    HTTP chunk exactly as given, so it may also be a half event, a comment, etc.

    Non-streaming: ``200`` with ``garbage`` as the (``application/json``) body.
    """

    chunks: int
    text: str = DEFAULT_TEXT
    garbage: str = "data: {not json\n\n"


@dataclass(frozen=True)
class InStreamError:
    """After ``chunks`` content chunks, send an error event and end the response.

    The event is ``data: {"error": {"message": ..., "type": "server_error", "param": null,
    "code": null}}``, as OpenAI does when a stream fails after the ``200`` was sent.  No
    ``[DONE]`` follows; the response is ended cleanly and the socket closed.

    Non-streaming: a ``500`` with the same error body.
    """

    chunks: int
    message: str = "The server had an error while processing your request."
    text: str = DEFAULT_TEXT


@dataclass(frozen=True)
class Status:
    """Answer at once with HTTP ``status`` and OpenAI's error JSON body.

    The body is ``{"error": {"message", "type", "param", "code"}}`` with ``type`` set to
    ``"requests"`` (code ``"rate_limit_exceeded"``) for 429, ``"server_error"`` for 5xx and
    ``"invalid_request_error"`` for other 4xx.  With ``retry_after`` (seconds), both
    ``retry-after`` (seconds, an integer when whole) and ``retry-after-ms`` are sent.
    """

    status: int
    retry_after: float | None = None
    message: str = "The fake server answered with an error status."


Scenario: TypeAlias = (
    Reply | StallBeforeHeaders | StallAfter | CloseWithoutDone | Reset | MalformedChunk | InStreamError | Status
)
"""Any one of the scenario classes above."""


# --------------------------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request as the fake server received it.

    ``headers`` has lower-case names (a repeated header keeps its last value); ``json`` is the
    decoded body when it is a JSON object, else ``None``; ``body`` is the raw body; ``scenario``
    is the scenario that answered it (``None`` for routes other than chat completions).
    """

    method: str
    path: str
    headers: dict[str, str]
    json: dict[str, Any] | None
    body: bytes = b""
    scenario: Scenario | None = None


def split_words(text: str) -> list[str]:
    """Split ``text`` into the content pieces streamed one chunk each.

    Each piece is a word with the whitespace that follows it (``re.findall(r"\\S+\\s*")``);
    leading whitespace is kept on the first piece, so ``"".join(split_words(t)) == t`` always.
    """
    pieces = re.findall(r"\S+\s*", text)
    lead = text[: len(text) - len(text.lstrip())]
    if lead:
        if pieces:
            pieces[0] = lead + pieces[0]
        else:
            pieces = [lead]
    return pieces


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


class _ClientGone(Exception):
    """The client closed (or reset) its side of the connection."""


class _BadRequest(Exception):
    """The bytes received are not an HTTP/1.1 request we understand."""


class _Conn:
    """One client connection: its streams and a watcher that notices the client going away."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.gone = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    def watch(self) -> None:
        """Start reading until EOF in the background (the request has been read by then)."""
        self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        try:
            while await self.reader.read(65536):
                pass
        except (ConnectionError, OSError):
            pass
        self.gone.set()

    async def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    def check(self) -> None:
        if self.gone.is_set() or self.writer.transport.is_closing():
            raise _ClientGone

    async def write(self, data: bytes) -> None:
        self.check()
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise _ClientGone from exc

    async def write_chunk(self, data: bytes) -> None:
        """Write ``data`` as one HTTP/1.1 chunk (chunked transfer-coding)."""
        if data:
            await self.write(b"%x\r\n%s\r\n" % (len(data), data))

    async def end_chunks(self) -> None:
        """Write the chunked-encoding terminator: the response is complete at the HTTP level."""
        await self.write(b"0\r\n\r\n")

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``; raise :class:`_ClientGone` at once if the client goes away."""
        self.check()
        if seconds <= 0:
            return
        try:
            async with asyncio.timeout(seconds):
                await self.gone.wait()
        except TimeoutError:
            return
        raise _ClientGone

    async def hold(self) -> None:
        """Send nothing until the client goes away (or the server stops and cancels us)."""
        await self.gone.wait()

    def reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER on, timeout 0, then abort)."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


def _reason(status: int) -> str:
    return _REASONS.get(status, "Error" if status >= 400 else "OK")


def _error_body(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _count_prompt_tokens(body: dict[str, Any]) -> int:
    words = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                words += len(content.split())
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        words += len(part["text"].split())
    return max(words, 1)


class FakeOpenAI:
    """A fake OpenAI server on ``127.0.0.1`` with an ephemeral port.

    ``default`` answers every chat-completions request once the :meth:`enqueue` queue is empty
    (``Reply()`` when not given).  Use as ``async with FakeOpenAI() as fake:`` or call
    :meth:`start` / :meth:`stop`.
    """

    def __init__(self, default: Scenario | None = None) -> None:
        self.default: Scenario = default if default is not None else Reply()
        self.requests: list[RecordedRequest] = []
        self.errors: list[BaseException] = []
        """Unexpected exceptions raised inside the server (bugs in the fake); should stay empty."""
        self.port: int = 0
        self._queue: deque[Scenario] = deque()
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()
        self._ids = itertools.count(1)

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The URL to give the OpenAI client: ``http://127.0.0.1:{port}/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def open_connections(self) -> int:
        """Client sockets currently open on the server side."""
        return len(self._conns)

    async def start(self) -> None:
        """Listen on ``127.0.0.1`` with an ephemeral port (see :attr:`port`)."""
        if self._server is not None:
            raise RuntimeError("FakeOpenAI already started")
        self._server = await asyncio.start_server(self._handle, host="127.0.0.1", port=0, limit=_MAX_LINE)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close every client socket, including stalled ones.

        Connections are aborted (no graceful close) and their handler tasks cancelled and
        awaited, so nothing lingers after this returns and :attr:`open_connections` is 0.
        """
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self._conns):
            conn.writer.transport.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._conns.clear()
        if server is not None:
            await server.wait_closed()
        self._notify()

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ---- test-facing helpers ---------------------------------------------------------------

    def enqueue(self, *scenarios: Scenario) -> None:
        """Queue scenarios; each chat-completions request takes the oldest one (FIFO)."""
        self._queue.extend(scenarios)

    @property
    def pending(self) -> int:
        """Scenarios queued and not yet used."""
        return len(self._queue)

    async def wait_for_requests(self, n: int, timeout: float = 5.0) -> None:
        """Wait until at least ``n`` requests have been received; ``TimeoutError`` otherwise."""
        await self._wait(lambda: len(self.requests) >= n, timeout, f"{n} requests (got {len(self.requests)})")

    async def wait_for_open_connections(self, n: int = 0, timeout: float = 5.0) -> None:
        """Wait until exactly ``n`` client sockets are open (default: all closed)."""
        await self._wait(
            lambda: self.open_connections == n,
            timeout,
            f"{n} open connections (have {self.open_connections})",
        )

    async def _wait(self, predicate: Callable[[], bool], seconds: float, what: str) -> None:
        try:
            async with asyncio.timeout(seconds):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"FakeOpenAI: timed out after {seconds}s waiting for {what}") from None

    def _notify(self) -> None:
        self._changed.set()

    # ---- connection handling ---------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        conn = _Conn(reader, writer)
        self._conns.add(conn)
        self._notify()
        try:
            await self._serve(conn)
        except (_ClientGone, ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): the transport is already aborted
        except Exception as exc:  # a bug in the fake: keep it for the test to see
            self.errors.append(exc)
        finally:
            await conn.stop_watching()
            if not writer.transport.is_closing():
                writer.transport.close()
            self._conns.discard(conn)
            if task is not None:
                self._tasks.discard(task)
            self._notify()

    async def _serve(self, conn: _Conn) -> None:
        try:
            parsed = await self._read_request(conn.reader)
        except _BadRequest as exc:
            await self._send_json(conn, 400, _error_body(str(exc), "invalid_request_error"))
            return
        if parsed is None:  # connected and closed without a request
            return
        method, target, headers, body = parsed
        path = target.split("?", 1)[0]
        data: Any = None
        if body:
            with contextlib.suppress(ValueError):
                data = json.loads(body)
        record = RecordedRequest(
            method=method,
            path=path,
            headers=headers,
            json=data if isinstance(data, dict) else None,
            body=body,
        )

        if path.rstrip("/") == "/v1/chat/completions":
            if method != "POST":
                self._record(record)
                await self._send_json(conn, 405, _error_body(f"Method {method} not allowed.", "invalid_request_error"))
                return
            scenario = self._queue.popleft() if self._queue else self.default
            record.scenario = scenario
            self._record(record)
            conn.watch()
            if record.json is None:
                await self._send_json(
                    conn,
                    400,
                    _error_body("We could not parse the JSON body of your request.", "invalid_request_error"),
                )
                return
            await self._chat(conn, record.json, scenario)
            return

        self._record(record)
        if path.rstrip("/") == "/v1/models" and method == "GET":
            created = int(time.time())
            await self._send_json(
                conn,
                200,
                {
                    "object": "list",
                    "data": [{"id": FAKE_MODEL, "object": "model", "created": created, "owned_by": "fake"}],
                },
            )
            return
        await self._send_json(
            conn, 404, _error_body(f"Invalid URL ({method} {path})", "invalid_request_error", "unknown_url")
        )

    def _record(self, record: RecordedRequest) -> None:
        self.requests.append(record)
        self._notify()

    @staticmethod
    async def _read_request(
        reader: asyncio.StreamReader,
    ) -> tuple[str, str, dict[str, str], bytes] | None:
        """Read one HTTP/1.1 request: request line, headers, and a Content-Length or chunked body."""
        try:
            line = await reader.readline()
        except (asyncio.LimitOverrunError, ValueError) as exc:
            raise _BadRequest("request line too long") from exc
        if not line:
            return None
        parts = line.decode("latin-1").strip().split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(f"bad request line: {line!r}")
        method, target, _version = parts

        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS):
            try:
                raw = await reader.readline()
            except (asyncio.LimitOverrunError, ValueError) as exc:
                raise _BadRequest("header line too long") from exc
            if not raw:
                raise asyncio.IncompleteReadError(b"", None)
            if raw in (b"\r\n", b"\n"):
                break
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep:
                raise _BadRequest(f"bad header line: {raw!r}")
            headers[name.strip().lower()] = value.strip()
        else:
            raise _BadRequest("too many headers")

        body = b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            pieces: list[bytes] = []
            total = 0
            while True:
                size_line = await reader.readline()
                if not size_line:
                    raise asyncio.IncompleteReadError(b"", None)
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError as exc:
                    raise _BadRequest("bad chunk size") from exc
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                total += size
                if total > _MAX_BODY:
                    raise _BadRequest("body too large")
                pieces.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(pieces)
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError as exc:
                raise _BadRequest("bad content-length") from exc
            if length < 0 or length > _MAX_BODY:
                raise _BadRequest("bad content-length")
            body = await reader.readexactly(length)
        return method, target, headers, body

    # ---- responses -------------------------------------------------------------------------

    def _request_id(self) -> str:
        return f"req_fake{next(self._ids):06d}"

    @staticmethod
    def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_reason(status)}"]
        lines.extend(f"{name}: {value}" for name, value in headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _send_json(
        self, conn: _Conn, status: int, payload: Any, extra_headers: list[tuple[str, str]] | None = None
    ) -> None:
        body = json.dumps(payload).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            ("x-request-id", self._request_id()),
            *(extra_headers or []),
        ]
        await conn.write(self._head(status, headers) + body)

    async def _send_stream_head(self, conn: _Conn) -> None:
        headers = [
            ("Content-Type", "text/event-stream; charset=utf-8"),
            ("Transfer-Encoding", "chunked"),
            ("Cache-Control", "no-cache"),
            ("Connection", "close"),
            ("x-request-id", self._request_id()),
            ("openai-processing-ms", "1"),
        ]
        await conn.write(self._head(200, headers))

    async def _chat(self, conn: _Conn, body: dict[str, Any], scenario: Scenario) -> None:
        if isinstance(scenario, StallBeforeHeaders):
            await conn.hold()
            return
        if isinstance(scenario, Status):
            await self._status(conn, scenario)
            return
        if body.get("stream") is True:
            await self._chat_stream(conn, body, scenario)
        else:
            await self._chat_plain(conn, body, scenario)

    async def _status(self, conn: _Conn, scenario: Status) -> None:
        status = scenario.status
        code: str | None = None
        if status == 429:
            type_, code = "requests", "rate_limit_exceeded"
        elif status >= 500:
            type_ = "server_error"
        else:
            type_ = "invalid_request_error"
        extra: list[tuple[str, str]] = []
        if scenario.retry_after is not None:
            seconds = scenario.retry_after
            text = str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))
            extra = [("retry-after", text), ("retry-after-ms", str(round(seconds * 1000)))]
        await self._send_json(conn, status, _error_body(scenario.message, type_, code), extra)

    async def _chat_plain(self, conn: _Conn, body: dict[str, Any], scenario: Scenario) -> None:
        if isinstance(scenario, InStreamError):
            await self._send_json(conn, 500, _error_body(scenario.message, "server_error"))
            return
        if isinstance(scenario, MalformedChunk):
            garbage = scenario.garbage.encode()
            headers = [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(garbage))),
                ("Connection", "close"),
            ]
            await conn.write(self._head(200, headers) + garbage)
            return

        text = scenario.text if isinstance(scenario, Reply | StallAfter | CloseWithoutDone | Reset) else DEFAULT_TEXT
        finish_reason = scenario.finish_reason if isinstance(scenario, Reply) else "stop"
        if isinstance(scenario, Reply):
            await conn.pause(scenario.first_delay_s)
        model = str(body.get("model") or FAKE_MODEL)
        prompt_tokens = _count_prompt_tokens(body)
        completion_tokens = len(split_words(text))
        payload = {
            "id": f"chatcmpl-fake{next(self._ids):06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        data = json.dumps(payload).encode()
        head = self._head(
            200,
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(data))),
                ("Connection", "close"),
                ("x-request-id", self._request_id()),
            ],
        )
        if isinstance(scenario, Reply):
            await conn.write(head + data)
            return
        # Fault scenarios on a non-streaming request: only half of the promised body.
        await conn.write(head + data[: len(data) // 2])
        if isinstance(scenario, StallAfter):
            await conn.hold()
        elif isinstance(scenario, Reset):
            await conn.pause(scenario.pause_s)
            conn.reset()
        # CloseWithoutDone: return, and the handler closes the socket mid-body.

    async def _chat_stream(self, conn: _Conn, body: dict[str, Any], scenario: Scenario) -> None:
        model = str(body.get("model") or FAKE_MODEL)
        created = int(time.time())
        completion_id = f"chatcmpl-fake{next(self._ids):06d}"
        stream_options = body.get("stream_options")
        usage_requested = isinstance(stream_options, dict) and stream_options.get("include_usage") is True

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            obj: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if usage_requested:
                obj["usage"] = None  # as OpenAI does: null on every chunk but the usage chunk
            return obj

        async def event(obj: dict[str, Any]) -> None:
            await conn.write_chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")

        if isinstance(scenario, Reply):
            text, delay_s, first_delay_s = scenario.text, scenario.delay_s, scenario.first_delay_s
            limit: int | None = None
        else:
            assert not isinstance(scenario, StallBeforeHeaders | Status)
            text, delay_s, first_delay_s = scenario.text, 0.0, 0.0
            limit = scenario.chunks
        words = split_words(text)

        await self._send_stream_head(conn)
        await conn.pause(first_delay_s)
        await event(chunk({"role": "assistant", "content": "", "refusal": None}))

        sent = 0
        for index, word in enumerate(words):
            if limit is not None and sent >= limit:
                break
            if index > 0:
                await conn.pause(delay_s)
            await event(chunk({"content": word}))
            sent += 1

        if isinstance(scenario, StallAfter):
            await conn.hold()
            return
        if isinstance(scenario, CloseWithoutDone):
            await conn.end_chunks()
            return
        if isinstance(scenario, Reset):
            await conn.pause(scenario.pause_s)
            conn.reset()
            return
        if isinstance(scenario, InStreamError):
            await event(_error_body(scenario.message, "server_error"))
            await conn.end_chunks()
            return
        if isinstance(scenario, MalformedChunk):
            await conn.write_chunk(scenario.garbage.encode())
            for word in words[sent:]:
                await event(chunk({"content": word}))

        finish_reason = scenario.finish_reason if isinstance(scenario, Reply) else "stop"
        await event(chunk({}, finish_reason))

        include_usage = scenario.include_usage if isinstance(scenario, Reply) else None
        if include_usage is True or (include_usage is None and usage_requested):
            prompt_tokens = _count_prompt_tokens(body)
            await event(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": len(words),
                        "total_tokens": prompt_tokens + len(words),
                    },
                }
            )
        await conn.write_chunk(b"data: [DONE]\n\n")
        await conn.end_chunks()
