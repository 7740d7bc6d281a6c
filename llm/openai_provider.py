"""OpenAI (or any OpenAI-compatible server) through the official ``openai`` SDK.

* ``max_retries=0``: the generation job owns retries (once, before any text, honouring
  ``retry-after``) and deadlines; SDK retries would hide time from them.
* The SDK's own read timeout (600 s by default) is only a backstop here: the job's
  ``asyncio.timeout`` deadlines fire first. We still pass the connect timeout through so a dead
  host fails at the socket level.
* ``stream_options.include_usage``: the last chunk then carries ``usage`` and ``choices: []``;
  servers that never send it are fine (usage stays unknown).

Three ways to read the stream, with the same pieces and the same errors for every fault
(``tests/test_lean_upstream.py`` runs every fault script through each, ``tests/test_wire.py`` also
HTTP framings split at every byte):

* ``wire`` (the default): the SDK still builds the request (``_build_request``: auth, base URL,
  default headers, ``X-Stainless-*``) and makes the status errors (``_make_status_error_from_response``
  on the error body), but the request is sent and the streamed body read by :mod:`llm.wire`, a small
  asyncio HTTP/1.1 client with keep-alive per origin: per chunk, one ``data_received`` and a chunked
  decoder instead of h11, httpcore2's event loop, anyio's cancel scopes and httpx2's byte iterators
  (about a third of the server's CPU under load). It raises httpx2's exception classes, so the errors
  map as for ``lean``. It steps aside (the request goes the ``lean`` way) when it could not be
  faithful: a proxy for the URL (``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY``, as
  httpx2 reads them), a custom HTTP client or auth flow on the SDK client, a scheme other than http
  and https, userinfo in the URL, and a redirect (sent again through httpx2, which follows it).
* ``lean``: the same body and SSE parsing, on the SDK's own HTTP client: the body encoded once with
  ``orjson`` (no per-request parameter transform) and posted with
  ``client.post(..., cast_to=httpx.Response, stream=True)``; the SSE lines split and parsed here
  with ``orjson``, reading only ``choices[0].delta.content`` and ``finish_reason`` (no pydantic
  object per chunk). The SDK's stream does both per request and per chunk, which was most of the
  event loop's time under load (issue 10).
* ``sdk``: ``client.chat.completions.create(stream=True)`` and its ``AsyncStream`` (kept as the
  reference the other paths are tested against, and as an escape hatch: ``OPENAI_STREAM_PARSER=sdk``).
"""

from __future__ import annotations

import contextlib
import json
import re
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal, cast

import anyio
import openai
import orjson
from loguru import logger

try:  # the HTTP library the SDK is built on (openai ≥ 3 uses the httpx2 fork)
    import httpx2 as _http
except ImportError:  # pragma: no cover - older SDKs
    import httpx as _http  # type: ignore[no-redef]

from openai._base_client import AsyncHttpxClientWrapper, get_platform
from openai._models import FinalRequestOptions
from openai._utils import asyncify

from llm.base import Piece, ReplyRequest
from llm.exceptions import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from llm.wire import WireClient, WireResponse


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


StreamParser = Literal["wire", "lean", "sdk"]

_DONE = b"[DONE]"
# What the SDK's stream turns into APITimeoutError / APIConnectionError while reading the body.
_TIMEOUTS = (_http.TimeoutException,)
_TRANSPORT = (_http.RequestError, ssl.SSLError, anyio.EndOfStream)


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
        stream_parser: StreamParser,
    ) -> None:
        self.model = model
        self._connect_timeout_s = connect_timeout_s
        self._stream_parser = stream_parser
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=openai.Timeout(read_timeout_s, connect=connect_timeout_s),
        )
        http = self._client._client  # the SDK's httpx2 client: its cookie jar and trust_env serve the wire too
        self._wire = WireClient(cookies=http.cookies, trust_env=http.trust_env) if stream_parser == "wire" else None
        # The request the SDK built last (wire path), to send again with another body while nothing it is
        # built from has changed (see _sdk_request); None until the SDK is seen to build the same headers twice.
        self._template: tuple[tuple[object, ...], _http.Request] | None = None
        self._reuse: bool | None = None  # None: not seen yet; False: the SDK's headers differ per request

    async def open_reply(self, request: ReplyRequest) -> AsyncIterator[Piece]:
        if self._stream_parser == "sdk":
            return await self._open_sdk(request)
        if self._wire is not None:
            return await self._open_wire(self._wire, request)
        return await self._open_lean(request)

    # --- wire: the SDK's request, our HTTP/1.1 (llm/wire.py), our SSE parser --------------------------
    async def _open_wire(self, wire: WireClient, request: ReplyRequest) -> AsyncIterator[Piece]:
        try:
            http_request = await self._sdk_request(self._body(request))
        except Exception as exc:
            raise translate(exc, connect_timeout_s=self._connect_timeout_s) from exc
        if http_request is None:
            return await self._open_lean(request)
        try:
            response = await wire.send(http_request)
        except _TIMEOUTS as exc:  # what the SDK's request() makes of them
            err: Exception = openai.APITimeoutError(request=http_request)
            raise translate(err, connect_timeout_s=self._connect_timeout_s) from exc
        except _TRANSPORT as exc:
            err = openai.APIConnectionError(request=http_request)
            raise translate(err, connect_timeout_s=self._connect_timeout_s) from exc
        if response.is_success:
            return self._lean_pieces(response)
        if response.has_redirect_location:
            # The SDK's client follows redirects; let it (the POST is sent again, through httpx2).
            response.close()
            return await self._open_lean(request)
        try:
            # As the SDK's request(): the whole body read, then the error made from the response.
            error_response = response.to_httpx(await response.aread())
            await error_response.aread()  # decodes a Content-Encoding, as httpx2 would have
        except Exception as exc:
            raise translate(exc, connect_timeout_s=self._connect_timeout_s) from exc
        finally:
            response.close()
        err = self._client._make_status_error_from_response(error_response)
        raise translate(err, connect_timeout_s=self._connect_timeout_s) from None

    async def _sdk_request(self, body: bytes) -> _http.Request | None:
        """The ``httpx2.Request`` the SDK's ``post`` would send (what its ``request()`` does before
        sending, with ``max_retries=0``), or ``None`` when the wire client cannot send it faithfully:
        a custom HTTP client or auth flow, a proxy for the URL, userinfo in it, not http or https.

        Building it costs ~200 µs per reply (the SDK's options, header merge and URL handling), and for a
        given client everything but the body and its length comes out the same each time. So the first
        request is built twice, with two bodies: if the headers differ in anything but Content-Length (an
        idempotency key, say, or anything an SDK upgrade makes per request) the SDK builds every request;
        if not, later requests are that one with their own body, for as long as what it was built from
        stays the same (the API key, the base URL, the cookies the upstream set)."""
        if self._reuse is False:
            return await self._build_sdk_request(body)
        key = self._template_key()
        if self._template is not None and self._template[0] == key:
            return _with_body(self._template[1], body)
        built = await self._build_sdk_request(body)
        if built is None:
            return None
        if self._reuse is None:
            again = await self._build_sdk_request(body + b" ")
            self._reuse = again is not None and _same_but_length(built, again)
            if not self._reuse:
                logger.info("the SDK builds each upstream request differently: each one is built by the SDK")
                return built
        self._template = (key, built)
        return built

    def _template_key(self) -> tuple[object, ...]:
        """What the SDK's request is built from that can change while the server runs."""
        client = self._client
        cookies = tuple(sorted((c.domain, c.path, c.name, c.value or "") for c in client._client.cookies.jar))
        return (client.api_key, str(client.base_url), client.organization, client.project, cookies)

    async def _build_sdk_request(self, body: bytes) -> _http.Request | None:
        client = self._client
        http = client._client
        if type(http) is not AsyncHttpxClientWrapper or client.custom_auth is not None:
            return None
        if getattr(client, "_workload_identity_auth", None) is not None:
            return None
        if getattr(client, "_provider_runtime", None) is not None:
            return None
        if client._platform is None:  # as request(): get_platform can block, so in a thread, once
            client._platform = await asyncify(get_platform)()
        options = FinalRequestOptions.construct(
            method="post",
            url="/chat/completions",
            json_data=None,
            content=body,
            files=None,
            headers={"Content-Type": "application/json"},
        )
        if client._idempotency_header:
            options.idempotency_key = client._idempotency_key()
        options = await client._prepare_options(options)
        http_request = client._build_request(options, retries_taken=0)
        await client._prepare_request(http_request)
        url = http_request.url
        if url.scheme not in ("http", "https") or url.userinfo:
            return None
        if http._transport_for_url(url) is not http._transport:  # a proxy (HTTP_PROXY, NO_PROXY ...)
            return None
        return http_request

    # --- lean: the SDK's client, our body and our SSE parser ---------------------------------------
    def _body(self, request: ReplyRequest) -> bytes:
        """The request body, encoded once (what ``create`` would send, without its type transform)."""
        body: dict[str, Any] = {
            "messages": request.messages,
            "model": request.model or self.model,
            "max_tokens": request.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        return orjson.dumps(body)

    async def _open_lean(self, request: ReplyRequest) -> AsyncIterator[Piece]:
        try:
            response = await self._client.post(
                "/chat/completions",
                cast_to=_http.Response,
                content=self._body(request),
                options={"headers": {"Content-Type": "application/json"}},
                stream=True,
            )
        except Exception as exc:
            raise translate(exc, connect_timeout_s=self._connect_timeout_s) from exc
        return self._lean_pieces(response)

    async def _lean_pieces(self, response: Any) -> AsyncIterator[Piece]:
        """Text pieces, then one final piece with the finish reason (as :meth:`_pieces`)."""
        finish_reason: str | None = None
        done = False
        try:
            async for data in _sse_data(response):
                if data.startswith(_DONE):
                    done = True
                    break
                chunk = _loads(data)
                if isinstance(chunk, Mapping):
                    error = chunk.get("error")
                    if error:
                        message = error.get("message") if isinstance(error, Mapping) else None
                        if not message or not isinstance(message, str):
                            message = "An error occurred during streaming"
                        raise openai.APIError(message, response.request, body=error)
                    choices = chunk.get("choices")
                else:
                    choices = getattr(chunk, "choices", None)  # what the SDK's model would say: an error
                if not choices:
                    continue  # the usage-only final chunk (choices: []), or an empty keep-alive
                choice = choices[0]
                delta = choice.get("delta")
                text = (delta.get("content") or "") if delta else ""
                if text:
                    yield Piece(text=text)
                reason = choice.get("finish_reason")
                if reason:
                    finish_reason = reason
        except UpstreamError:
            raise
        except _TIMEOUTS as exc:
            err = openai.APITimeoutError(request=response.request)
            raise translate(err, connect_timeout_s=self._connect_timeout_s) from exc
        except _TRANSPORT as exc:
            conn = openai.APIConnectionError(request=response.request)
            raise translate(conn, connect_timeout_s=self._connect_timeout_s) from exc
        except Exception as exc:
            raise translate(exc, connect_timeout_s=self._connect_timeout_s) from exc
        finally:
            # Ended, failed or cancelled: close the HTTP response so the upstream socket is released.
            if done and isinstance(response, WireResponse):
                response.release_after_end()  # pooled if its terminator follows [DONE], as it should
            else:
                with contextlib.suppress(Exception):
                    await response.aclose()
        if finish_reason is None:
            raise UpstreamUnavailable("the model provider closed the stream before the end of the reply")
        yield Piece(finish_reason=finish_reason)

    # --- sdk: create() and its AsyncStream ----------------------------------------------------------
    async def _open_sdk(self, request: ReplyRequest) -> AsyncIterator[Piece]:
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
        if self._wire is not None:
            await self._wire.aclose()
        await self._client.close()


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        # The rare bad chunk: the standard library raises the very error (and message) the SDK
        # would have, or reads what orjson refuses (NaN) the way the SDK does.
        return json.loads(data.decode("utf-8"))


_LINE_END = re.compile(rb"[\r\n]")


async def _sse_data(response: Any) -> AsyncIterator[bytes]:
    """The ``data`` of each server-sent event in the body (multi-line data joined with ``\\n``),
    exactly as the SDK's ``SSEDecoder`` reads it: lines end with CRLF, LF or CR; a blank line ends an
    event (one with an ``event``, ``id`` or ``retry`` field but no data has empty data); comments and
    other fields are skipped; a last line without its blank line is not an event. Bytes may be split
    anywhere (mid-line, mid-UTF-8: lines are split on bytes, and JSON is parsed from bytes)."""
    pending = b""
    skip_lf = False
    data: list[bytes] = []
    fields = False  # an event/retry field since the last event
    last_id = False  # like the SDK, an id is never reset: every later blank line is an event
    async for chunk in response.aiter_bytes():
        start = 0
        for match in _LINE_END.finditer(chunk):
            end = match.start()
            if skip_lf and end == start and chunk[end] == 10:
                skip_lf = False
                start = end + 1
                continue
            line = pending + chunk[start:end] if pending else chunk[start:end]
            pending = b""
            skip_lf = chunk[end] == 13
            start = end + 1
            if not line:
                if data or fields or last_id:
                    yield data[0] if len(data) == 1 else b"\n".join(data)
                    data, fields = [], False
                continue
            if line[0] == 58:  # ":" a comment
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                data.append(value)
            elif name == b"event":
                fields = fields or bool(value)
            elif name == b"retry" and value.lstrip(b"+-").isdigit():
                fields = True
            elif name == b"id" and b"\0" not in value:
                last_id = True
        if start < len(chunk):
            skip_lf = False
            pending += chunk[start:]


def _with_body(template: _http.Request, body: bytes) -> _http.Request:
    """``template`` (a request the SDK built) with another body: its Content-Length, the rest as is."""
    headers = [(k, str(len(body)).encode() if k.lower() == b"content-length" else v) for k, v in template.headers.raw]
    return _http.Request(template.method, template.url, headers=headers, content=body, extensions=template.extensions)


def _same_but_length(one: _http.Request, other: _http.Request) -> bool:
    """Whether two requests the SDK built differ in nothing but their bodies and Content-Length."""

    def rest(request: _http.Request) -> list[tuple[bytes, bytes]]:
        return [(k.lower(), v) for k, v in request.headers.raw if k.lower() != b"content-length"]

    return (
        one.method == other.method
        and one.url == other.url
        and rest(one) == rest(other)
        and one.extensions == other.extensions
    )
