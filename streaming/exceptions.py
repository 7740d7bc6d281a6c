"""Errors of the streaming core, and the one table that maps error codes to the wire.

Tree::

    ChatError                    code, http_status, ws_close — the base of everything a client can see
    ├── BadRequest               400 / error frame (connection stays open)
    ├── Unauthorized             401 / close 4401 — missing, malformed, expired or forged token
    ├── Forbidden                403 — a valid token for another conversation or brand
    ├── NotFound                 404 — unknown brand, unknown conversation
    ├── StreamExpired            410 / terminal-less ``error`` — the buffer no longer holds the stream
    ├── PayloadTooLarge          413 / close 1009
    ├── ShuttingDown             503 / close 1012 — resume on another instance
    └── SlowConsumer             close 1013 — a client that stopped reading; it may resume

Upstream failures are not exceptions the client sees: they end a stream with an ``error`` event
(see ``llm.exceptions``).
"""

from __future__ import annotations


class ChatError(Exception):
    code = "internal"
    http_status = 500
    ws_close = 1011

    def __init__(self, message: str, *, stream_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.stream_id = stream_id

    def __repr__(self) -> str:
        sid = f", stream_id={self.stream_id!r}" if self.stream_id else ""
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}{sid})"


class BadRequest(ChatError):
    code = "bad_request"
    http_status = 400
    ws_close = 4400


class Unauthorized(ChatError):
    code = "unauthorized"
    http_status = 401
    ws_close = 4401


class Forbidden(ChatError):
    code = "forbidden"
    http_status = 403
    ws_close = 4403


class NotFound(ChatError):
    code = "not_found"
    http_status = 404
    ws_close = 4404


class StreamExpired(ChatError):
    code = "stream_expired"
    http_status = 410
    ws_close = 4410


class PayloadTooLarge(ChatError):
    code = "payload_too_large"
    http_status = 413
    ws_close = 1009


class ShuttingDown(ChatError):
    code = "shutting_down"
    http_status = 503
    ws_close = 1012


class SlowConsumer(ChatError):
    code = "slow_consumer"
    http_status = 503
    ws_close = 1013


# WebSocket close codes that PROTOCOL.md §4 names, in one place.
CLOSE_HELLO_TIMEOUT = 4408
CLOSE_UNAUTHORIZED = Unauthorized.ws_close
CLOSE_BAD_FRAMES = 4400
CLOSE_FLOOD = 4429
CLOSE_TOO_LARGE = PayloadTooLarge.ws_close
CLOSE_SHUTDOWN = ShuttingDown.ws_close
CLOSE_SLOW_CONSUMER = SlowConsumer.ws_close
