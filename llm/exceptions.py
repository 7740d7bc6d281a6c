"""Upstream (model provider) failures, translated from whatever the SDK raised.

Tree::

    UpstreamError                code, retryable, status, retry_after_s
    ├── UpstreamTimeout          connect / first_token / stall / deadline
    ├── UpstreamRateLimited      429 (retry_after_s from ``retry-after``)
    ├── UpstreamStatusError      any other HTTP error status
    ├── UpstreamUnavailable      connection refused or reset, stream cut before its end
    └── UpstreamProtocolError    malformed chunk, in-stream ``{"error": …}``

A stream that fails ends with an ``error`` event whose ``code`` is the class's code.
"""

from __future__ import annotations


class UpstreamError(Exception):
    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        extra = f", status={self.status}" if self.status else ""
        if self.retry_after_s is not None:
            extra += f", retry_after_s={self.retry_after_s}"
        return f"{type(self).__name__}({self.message!r}{extra})"


class UpstreamTimeout(UpstreamError):
    code = "upstream_timeout"

    def __init__(self, phase: str, seconds: float) -> None:
        super().__init__(f"the model did not answer in time ({phase} timeout after {seconds:g} s)")
        self.phase = phase


class UpstreamRateLimited(UpstreamError):
    code = "rate_limited"


class UpstreamStatusError(UpstreamError):
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"


class UpstreamProtocolError(UpstreamError):
    code = "upstream_error"
