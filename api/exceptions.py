"""Errors of the edges: a request, frame or connection the server refuses.

Tree::

    WireError (streaming.codes)  code, message, stream_id; HTTP status / close code from the table
    └── RequestError             the request is refused; nothing about any stream changed
        ├── BadRequest           400 / ``error`` frame (the connection stays open)
        ├── Unauthorized         401 / close 4401 — missing, malformed, expired or forged token
        ├── Forbidden            403 / close 4403 — a valid token for another conversation or brand,
        │                        or an origin the brand does not allow
        ├── NotFound             404 — unknown brand, unknown conversation
        └── PayloadTooLarge      413 / close 1009
"""

from __future__ import annotations

from streaming.codes import WireError


class RequestError(WireError):
    code = "bad_request"


class BadRequest(RequestError):
    code = "bad_request"


class Unauthorized(RequestError):
    code = "unauthorized"


class Forbidden(RequestError):
    code = "forbidden"


class NotFound(RequestError):
    code = "not_found"


class PayloadTooLarge(RequestError):
    code = "payload_too_large"


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The HTTP error body of docs/protocol.md §9: ``{"error": {"code", "message"}}``."""
    return {"error": {"code": code, "message": message}}
