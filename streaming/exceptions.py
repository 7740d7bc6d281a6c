"""Errors of the stream core: a stream the buffer cannot serve.

Tree::

    WireError (streaming.codes)  code, message, stream_id; HTTP status / close code from the table
    └── StreamError              something is wrong with one stream
        └── StreamExpired        410 / ``error`` frame — the buffer no longer holds the stream
                                 (expired, unknown, or it lost part of it)

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
