"""OpenAI (or any OpenAI-compatible server) through the official ``openai`` SDK.

* ``max_retries=0``: the generation job owns retries (once, before any text, honouring
  ``retry-after``) and deadlines; SDK retries would hide time from them.
* The SDK's own read timeout (600 s by default) is only a backstop here: the job's
  ``asyncio.timeout`` deadlines fire first. We still pass the connect timeout through so a dead
  host fails at the socket level.
* ``stream_options.include_usage``: the last chunk then carries ``usage`` and ``choices: []``;
  servers that never send it are fine (usage stays unknown).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import openai
from loguru import logger

from llm.base import Piece, ReplyRequest
from llm.exceptions import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        if "retry-after" in headers:
            return float(headers["retry-after"])
    except ValueError:
        return None
    return None


def translate(exc: BaseException, *, connect_timeout_s: float) -> UpstreamError:
    """Map an SDK/transport exception to our :class:`UpstreamError` tree."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamTimeout("connect", connect_timeout_s)
    if isinstance(exc, openai.RateLimitError):
        return UpstreamRateLimited(
            f"the model provider is rate limiting (429): {exc.message}", status=429, retry_after_s=_retry_after(exc)
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retryable = status >= 500 or status in (408, 409)
        return UpstreamStatusError(
            f"the model provider answered {status}: {exc.message}",
            status=status,
            retryable=retryable,
            retry_after_s=_retry_after(exc),
        )
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamUnavailable(f"could not reach the model provider: {exc.message}")
    if isinstance(exc, openai.APIError):
        # An in-stream {"error": …} object.
        return UpstreamProtocolError(f"the model provider reported an error mid-stream: {exc.message}")
    return UpstreamProtocolError(f"the model provider sent something unreadable: {type(exc).__name__}: {exc}")


class OpenAIProvider:
    name = "openai"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        model: str,
        connect_timeout_s: float,
        read_timeout_s: float,
    ) -> None:
        self.model = model
        self._connect_timeout_s = connect_timeout_s
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=openai.Timeout(read_timeout_s, connect=connect_timeout_s),
        )

    async def open_reply(self, request: ReplyRequest) -> AsyncIterator[Piece]:
        try:
            extra: dict[str, Any] = {}
            if request.temperature is not None:
                extra["temperature"] = request.temperature
            stream = await self._client.chat.completions.create(
                model=request.model or self.model,
                messages=cast(Any, request.messages),
                stream=True,
                stream_options={"include_usage": True},
                max_tokens=request.max_tokens,
                **extra,
            )
        except Exception as exc:
            raise translate(exc, connect_timeout_s=self._connect_timeout_s) from exc
        return self._pieces(stream)

    async def _pieces(self, stream: Any) -> AsyncIterator[Piece]:
        """Text pieces, then one final piece with the finish reason."""
        finish_reason: str | None = None
        try:
            async for chunk in stream:
                if not chunk.choices:
                    continue  # the usage-only final chunk (choices: []), or an empty keep-alive
                choice = chunk.choices[0]
                text = (choice.delta.content or "") if choice.delta else ""
                if text:
                    yield Piece(text=text)
                if choice.finish_reason:
                    finish_reason = choice.finish_reason
        except UpstreamError:
            raise
        except Exception as exc:
            raise translate(exc, connect_timeout_s=self._connect_timeout_s) from exc
        finally:
            # Ended, failed or cancelled: close the HTTP response so the upstream socket is released.
            with contextlib.suppress(Exception):
                await stream.close()
        if finish_reason is None:
            raise UpstreamUnavailable("the model provider closed the stream before the end of the reply")
        yield Piece(finish_reason=finish_reason)

    async def check(self) -> None:
        """Readiness: the provider answers ``GET /models`` (cheap, no tokens spent)."""
        try:
            await self._client.models.list()
        except Exception as exc:
            err = translate(exc, connect_timeout_s=self._connect_timeout_s)
            logger.warning("openai provider not ready: {!r}", err)
            raise err from exc

    async def close(self) -> None:
        await self._client.close()
