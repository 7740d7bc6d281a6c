"""The fake OpenAI-compatible server: routes, the scenario queue, recording, acting out a behaviour."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from testkit.fake_openai.behaviours import (
    DEFAULT_TEXT,
    ByContent,
    CloseWithoutDone,
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
from testkit.fake_openai.wire import MAX_LINE, BadRequest, ClientGone, Conn, error_body, read_request, response_head

FAKE_MODEL = "fake-model"
"""The only model listed by ``GET /v1/models``; also used when a request names no model."""


@dataclass
class RecordedRequest:
    """One request as the fake server received it.

    ``headers`` has lower-case names (a repeated header keeps its last value); ``json`` is the
    decoded body when it is a JSON object, else ``None``; ``body`` is the raw body; ``scenario``
    is the scenario that answered it (``None`` for routes other than chat completions);
    ``received_at`` is :func:`time.monotonic` when the body had been read (for tests that check
    when a client retried).
    """

    method: str
    path: str
    headers: dict[str, str]
    json: dict[str, Any] | None
    body: bytes = b""
    scenario: Scenario | None = None
    received_at: float = field(default_factory=time.monotonic)


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

    def __init__(self, default: Scenario | ByContent | None = None, *, keep_alive: bool = False) -> None:
        self.default: Scenario | ByContent = default if default is not None else Reply()
        self.keep_alive = keep_alive
        """Keep the connection open after a complete reply (``Reply``, ``Status``, a model list) and
        serve the next request on it; other scenarios still close. Off: ``Connection: close`` always."""
        self.connections_accepted = 0
        """Client connections accepted since the start (a client that reuses a connection opens fewer)."""
        self.requests: list[RecordedRequest] = []
        self.errors: list[BaseException] = []
        """Unexpected exceptions raised inside the server (bugs in the fake); should stay empty."""
        self.port: int = 0
        self._queue: deque[Scenario | ByContent] = deque()
        self._server: asyncio.Server | None = None
        self._conns: set[Conn] = set()
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
        self._server = await asyncio.start_server(self._handle, host="127.0.0.1", port=0, limit=MAX_LINE)
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

    def enqueue(self, *scenarios: Scenario | ByContent) -> None:
        """Queue scenarios; each chat-completions request takes the oldest one (FIFO)."""
        self._queue.extend(scenarios)

    @property
    def pending(self) -> int:
        """Scenarios queued and not yet used."""
        return len(self._queue)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The chat-completions requests received so far (a readiness check's ``GET /v1/models`` left out)."""
        return [r for r in self.requests if r.path == "/v1/chat/completions"]

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
        conn = Conn(reader, writer)
        self._conns.add(conn)
        self.connections_accepted += 1
        self._notify()
        try:
            await self._serve(conn)
        except (ClientGone, ConnectionError, OSError, asyncio.IncompleteReadError):
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

    async def _serve(self, conn: Conn) -> None:
        while await self._serve_one(conn) and self.keep_alive:
            # The response is complete and nothing was awaited since its last byte was written, so
            # the client cannot have sent its next request yet: the watcher stops before reading it.
            await conn.stop_watching()
            conn.gone.clear()

    async def _serve_one(self, conn: Conn) -> bool:
        """Serve one request; True when the response was complete and the connection may serve another."""
        try:
            parsed = await read_request(conn.reader)
        except BadRequest as exc:
            await self._send_json(conn, 400, error_body(str(exc), "invalid_request_error"))
            return False
        if parsed is None:  # connected and closed without a request
            return False
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
                await self._send_json(conn, 405, error_body(f"Method {method} not allowed.", "invalid_request_error"))
                return False
            script = self._queue.popleft() if self._queue else self.default
            scenario = script.pick(record.json) if isinstance(script, ByContent) else script
            record.scenario = scenario
            self._record(record)
            conn.watch()
            if record.json is None:
                await self._send_json(
                    conn,
                    400,
                    error_body("We could not parse the JSON body of your request.", "invalid_request_error"),
                )
                return False
            await self._chat(conn, record.json, scenario)
            return isinstance(scenario, Reply | Status)

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
            return True
        await self._send_json(
            conn, 404, error_body(f"Invalid URL ({method} {path})", "invalid_request_error", "unknown_url")
        )
        return False

    def _record(self, record: RecordedRequest) -> None:
        self.requests.append(record)
        self._notify()

    # ---- responses -------------------------------------------------------------------------

    @property
    def _connection(self) -> str:
        return "keep-alive" if self.keep_alive else "close"

    def _request_id(self) -> str:
        return f"req_fake{next(self._ids):06d}"

    async def _send_json(
        self, conn: Conn, status: int, payload: Any, extra_headers: list[tuple[str, str]] | None = None
    ) -> None:
        body = json.dumps(payload).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", self._connection),
            ("x-request-id", self._request_id()),
            *(extra_headers or []),
        ]
        await conn.write(response_head(status, headers) + body)

    async def _send_stream_head(self, conn: Conn) -> None:
        headers = [
            ("Content-Type", "text/event-stream; charset=utf-8"),
            ("Transfer-Encoding", "chunked"),
            ("Cache-Control", "no-cache"),
            ("Connection", self._connection),
            ("x-request-id", self._request_id()),
            ("openai-processing-ms", "1"),
        ]
        await conn.write(response_head(200, headers))

    async def _chat(self, conn: Conn, body: dict[str, Any], scenario: Scenario) -> None:
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

    async def _status(self, conn: Conn, scenario: Status) -> None:
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
        await self._send_json(conn, status, error_body(scenario.message, type_, code), extra)

    async def _chat_plain(self, conn: Conn, body: dict[str, Any], scenario: Scenario) -> None:
        if isinstance(scenario, InStreamError):
            await self._send_json(conn, 500, error_body(scenario.message, "server_error"))
            return
        if isinstance(scenario, MalformedChunk):
            garbage = scenario.garbage.encode()
            headers = [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(garbage))),
                ("Connection", "close"),
            ]
            await conn.write(response_head(200, headers) + garbage)
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
        head = response_head(
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

    async def _chat_stream(self, conn: Conn, body: dict[str, Any], scenario: Scenario) -> None:
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
            await event(error_body(scenario.message, "server_error"))
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
