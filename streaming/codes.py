"""The wire vocabulary, defined once: every client-facing error code and WebSocket close code.

Every edge reads this module: the HTTP routes (status of the ``{"error": {"code", "message"}}``
body), the WebSocket adapter (which close code ends a connection), the OpenAI-compatible endpoint
(status and OpenAI ``type`` of its error body) and the JS client's tests (its close-code table is
checked against :data:`CLOSE_CODES` by ``tests/test_wire_codes.py``). docs/protocol.md §3 to §5 and §9 name
the codes; ``docs/protocol.md`` is the contract inside the repository.

An error code is one of three kinds:

* **request** — the request or frame is refused; the stream (if any) is untouched
  (``bad_request``, ``unauthorized``, ``identity_invalid``, ``forbidden``, ``not_found``, …);
* **stream** — the code of a terminal ``error`` event (``upstream_timeout``, ``generation_lost``, …);
* **connection** — why a connection is closed (``slow_consumer``, ``shutting_down``, …).

Some codes are more than one kind (``shutting_down`` refuses a send *and* ends a stream).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final


class Close(IntEnum):
    """WebSocket close codes the server sends (docs/protocol.md §4, §9)."""

    NORMAL = 1000
    PAYLOAD_TOO_LARGE = 1009  # a frame over MAX_FRAME_BYTES
    INTERNAL = 1011
    SHUTTING_DOWN = 1012  # the instance restarts: reconnect (elsewhere) and resume
    SLOW_CONSUMER = 1013  # the client stopped reading: reconnect and resume
    BAD_FRAMES = 4400  # too many bad frames
    UNAUTHORIZED = 4401  # bad or expired token: negotiate again
    FORBIDDEN = 4403  # the page's origin is not allowed for this brand
    HELLO_TIMEOUT = 4408  # no valid hello in time
    FLOOD = 4429  # frames faster than WS_RATE_PER_S


#: The close codes a client must understand, by the name the JS client uses for them.
CLOSE_CODES: Final[dict[int, str]] = {
    Close.PAYLOAD_TOO_LARGE: "payload_too_large",
    Close.SHUTTING_DOWN: "shutting_down",
    Close.SLOW_CONSUMER: "slow_consumer",
    Close.BAD_FRAMES: "bad_frames",
    Close.UNAUTHORIZED: "unauthorized",
    Close.FORBIDDEN: "forbidden",
    Close.HELLO_TIMEOUT: "hello_timeout",
    Close.FLOOD: "flood",
}


@dataclass(frozen=True)
class ErrorCode:
    """One client-facing error code and what it is on each edge."""

    code: str
    http_status: int
    openai_type: str  # the ``type`` of OpenAI's error body
    ws_close: Close | None = None  # the close code when this error ends a WebSocket connection
    retryable: bool = False  # as a terminal ``error`` event: sending again may succeed
    openai_code: str | None = None  # the ``code`` of OpenAI's error body, where OpenAI has a word for it

    @property
    def openai_error_code(self) -> str:
        return self.openai_code or self.code


_TABLE: Final[tuple[ErrorCode, ...]] = (
    # request errors
    ErrorCode("bad_request", 400, "invalid_request_error", Close.BAD_FRAMES),
    ErrorCode("unauthorized", 401, "invalid_request_error", Close.UNAUTHORIZED),
    ErrorCode("identity_invalid", 401, "invalid_request_error"),  # negotiate's `user` failed its HMAC
    ErrorCode("forbidden", 403, "permission_error", Close.FORBIDDEN),
    ErrorCode("not_found", 404, "invalid_request_error"),
    ErrorCode("method_not_allowed", 405, "invalid_request_error"),
    ErrorCode("conversation_busy", 409, "invalid_request_error"),
    ErrorCode("stream_expired", 410, "invalid_request_error"),
    ErrorCode("payload_too_large", 413, "invalid_request_error", Close.PAYLOAD_TOO_LARGE),
    ErrorCode("rate_limited", 429, "requests", retryable=True, openai_code="rate_limit_exceeded"),
    # stream (terminal event) errors
    ErrorCode("upstream_error", 502, "server_error", retryable=True),
    ErrorCode("upstream_unavailable", 502, "server_error", retryable=True),
    ErrorCode("upstream_timeout", 504, "server_error", retryable=True, openai_code="timeout"),
    ErrorCode("generation_lost", 502, "server_error", retryable=True),
    ErrorCode("buffer_unavailable", 503, "server_error", retryable=True),
    ErrorCode(
        "shutting_down", 503, "server_error", Close.SHUTTING_DOWN, retryable=True, openai_code="service_unavailable"
    ),
    # connection errors
    ErrorCode("slow_consumer", 503, "server_error", Close.SLOW_CONSUMER, retryable=True),
    ErrorCode("internal", 500, "server_error", Close.INTERNAL, retryable=True),
)

ERROR_CODES: Final[dict[str, ErrorCode]] = {e.code: e for e in _TABLE}


def error_code(code: str) -> ErrorCode:
    """The table entry for ``code``; an unknown code is an internal error (HTTP 500)."""
    return ERROR_CODES.get(code) or ERROR_CODES["internal"]


class WireError(Exception):
    """Base of every error a client can see: a ``code`` of :data:`ERROR_CODES` and a message safe
    to show. Subclasses set ``code``; the status on each edge comes from the table."""

    code = "internal"

    def __init__(self, message: str, *, stream_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.stream_id = stream_id

    @property
    def http_status(self) -> int:
        return error_code(self.code).http_status

    @property
    def ws_close(self) -> Close:
        return error_code(self.code).ws_close or Close.INTERNAL

    def __repr__(self) -> str:
        sid = f", stream_id={self.stream_id!r}" if self.stream_id else ""
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}{sid})"


def markdown_tables() -> str:
    """The two tables above as Markdown, for ``docs/protocol.md`` (``make protocol-doc``)."""
    lines = [
        "| code | HTTP | WebSocket close | OpenAI `type` / `code` | retryable |",
        "| --- | --- | --- | --- | --- |",
    ]
    for e in _TABLE:
        close = str(int(e.ws_close)) if e.ws_close is not None else "—"
        retry = "yes" if e.retryable else "no"
        lines.append(
            f"| `{e.code}` | {e.http_status} | {close} | `{e.openai_type}` / `{e.openai_error_code}` | {retry} |"
        )
    lines += ["", "| close code | name |", "| --- | --- |"]
    lines += [f"| {int(code)} | `{name}` |" for code, name in CLOSE_CODES.items()]
    return "\n".join(lines) + "\n"
