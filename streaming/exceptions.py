"""Errors of the stream core: a stream the buffer cannot serve.

Tree::

    WireError (streaming.codes)  code, message, stream_id; HTTP status / close code from the table
    └── StreamError              something is wrong with one stream
        ├── StreamExpired        410 / ``error`` frame — the buffer no longer holds the stream
        │                        (expired, unknown, or it lost part of it)
        └── BufferUnavailable    503 / ``error`` — the shared buffer is down past its deadline;
                                 retryable

    LeaseLost                    internal: another instance took this stream's production over;
                                 this producer's writes are refused and it stops, silently

Request and connection errors (bad token, bad frame, …) are the edges' (``api.exceptions``);
refusals of the reply pipeline (shutting down) are ``reply.exceptions``; upstream failures end a
stream with an ``error`` event (``llm.exceptions``).
"""

from __future__ import annotations

from streaming.codes import WireError


class StreamError(WireError):
    code = "internal"


class StreamExpired(StreamError):
    code = "stream_expired"


class BufferUnavailable(StreamError):
    code = "buffer_unavailable"

    def __init__(self, message: str, *, stream_id: str | None = None, since: float | None = None) -> None:
        super().__init__(message, stream_id=stream_id)
        self.since = since  # time.monotonic() when the outage began, when known


class LeaseLost(Exception):
    """This instance no longer produces the stream: its lease expired and another instance took
    the stream over (e.g. this process was paused). Its appends are refused atomically."""

    def __init__(self, stream_id: str) -> None:
        super().__init__(f"lease lost: another instance took over stream {stream_id}")
        self.stream_id = stream_id
