"""Errors of the edges: a request, frame or connection the server refuses.

Tree::

    WireError (streaming.codes)  code, message, stream_id; HTTP status / close code from the table
    └── RequestError             the request is refused; nothing about any stream changed
        ├── BadRequest           400 / ``error`` frame (the connection stays open)
        ├── Unauthorized         401 / close 4401 — missing, malformed, expired or forged token
        ├── IdentityInvalid      401 — negotiate's ``user`` is unsigned or wrongly signed (api/identity.py)
        ├── Forbidden            403 / close 4403 — a valid token for another conversation or brand,
        │                        or an origin the brand does not allow
        ├── NotFound             404 — unknown brand, unknown conversation
        ├── ConversationBusy     409 / ``error`` frame — a reply of this conversation is still running
        ├── PayloadTooLarge      413 / close 1009
        └── RateLimited          429 + ``Retry-After`` / ``error`` frame — a limit of ``api/limits.py``;
                                 carries ``retry_after_ms``
    LimitsUnavailable            503 ``buffer_unavailable`` — the limits' Redis cannot be reached
"""

from __future__ import annotations

from streaming.codes import WireError


class RequestError(WireError):
    code = "bad_request"


class BadRequest(RequestError):
    code = "bad_request"


class Unauthorized(RequestError):
    code = "unauthorized"


class IdentityInvalid(RequestError):
    """An identity the brand's backend did not sign (missing or wrong ``user.hash``): never trusted."""

    code = "identity_invalid"


class Forbidden(RequestError):
    code = "forbidden"


class NotFound(RequestError):
    code = "not_found"


class PayloadTooLarge(RequestError):
    code = "payload_too_large"


class ConversationBusy(RequestError):
    code = "conversation_busy"


class RateLimited(RequestError):
    """A limit was reached; trying again after ``retry_after_ms`` may succeed."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_ms: int = 1000, stream_id: str | None = None) -> None:
        super().__init__(message, stream_id=stream_id)
        self.retry_after_ms = max(1, int(retry_after_ms))

    @property
    def retry_after_s(self) -> int:
        """For the ``Retry-After`` header: whole seconds, rounded up."""
        return -(-self.retry_after_ms // 1000)


class LimitsUnavailable(WireError):
    """The shared store of the limits (Redis) cannot be reached: refused, retryable (503)."""

    code = "buffer_unavailable"


def error_body(code: str, message: str, *, retry_after_ms: int | None = None) -> dict[str, dict[str, str | int]]:
    """The HTTP error body of docs/protocol.md §9: ``{"error": {"code", "message"}}`` (+ ``retry_after_ms``
    for ``rate_limited``)."""
    error: dict[str, str | int] = {"code": code, "message": message}
    if retry_after_ms is not None:
        error["retry_after_ms"] = retry_after_ms
    return {"error": error}
