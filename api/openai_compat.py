"""OpenAI-compatible Chat Completions (docs/protocol.md §7): any OpenAI client can talk to a brand.

``POST /v1/chat/completions`` with ``Authorization: Bearer <the brand's API key>`` and
``model: <brand id>``. It is a thin adapter over the same :class:`GenerationManager` as the
WebSocket and SSE transports, so the brand's persona, prompt assembly, memory rules (history
trimmed to the budget in whole exchanges, older ones summarised) and streaming guard all apply.

Mapping (where OpenAI's format has no word for ours, the choice and why):

* ``system`` / ``developer`` messages from the client are **ignored**: the brand file is the
  persona, and letting a caller replace it would bypass the brand's rules. ``user`` and
  ``assistant`` messages are the history; the last message must be a ``user`` message.
  ``temperature``, ``max_tokens``, ``top_p`` … are ignored too: the brand's model settings apply.
  A parameter that asks for something a text-only brand cannot give (``tools``, ``functions``,
  ``response_format`` other than text, ``n > 1``, ``logprobs``, ``audio``, a non-text content
  part …) is refused with 400 and OpenAI's ``unsupported_parameter`` / ``unsupported_value``
  error naming it in ``param``, rather than silently answered with plain text.
* The conversation is ephemeral (the Chat Completions API is stateless): each request gets a
  fresh conversation id whose turns are never stored (``api/ephemeral.py``); only its stream is,
  for ``RESUME_WINDOW_S`` after the reply.
* ``finish_reason``: ``stop`` / ``length`` as ours; a guard fallback is ``content_filter``
  (OpenAI's word for "the content was replaced or cut by a filter"); a cancelled reply ``stop``.
* A ``retract`` cannot be expressed in a chunk stream: the text already sent stays, no more text
  follows, and the final chunk has ``finish_reason: content_filter`` plus a non-standard
  ``brandchat_retract: {reason, text}`` with the brand's fallback for clients that want to swap it
  in (the official SDK keeps unknown fields on the chunk object). Non-streaming responses simply
  carry the final, moderated text.
* A failure before any text is an HTTP error with OpenAI's error body (429 rate limited, 504
  timeout, 502 other upstream errors, 503 shutting down); after text was streamed it is an
  in-stream ``{"error": …}`` event and no ``[DONE]``, as OpenAI does (the SDK raises ``APIError``).
* A streaming client that disconnects cancels its reply (nobody else can resume it).
* The limits of ``api/limits.py`` apply per client address and brand (429 ``rate_limit_exceeded``
  with ``Retry-After``); each request is its own conversation, so none is ever busy.
* ``GET /v1/models`` lists the brands the key opens, ``GET /v1/models/{id}`` one of them (404
  ``model_not_found`` otherwise). An unknown ``/v1/…`` path or method is 404 / 405 in OpenAI's error
  body (:func:`http_error_response`, installed for the whole app by ``api/app.py``).
* ``POST /v1/responses`` (the Responses API, text only) is ``api/openai_responses.py``, built on the
  helpers here.
* A page in a browser (an ``Origin`` header) may call only from an origin the brand and
  ``ALLOWED_ORIGINS`` allow; without one (server-side callers) the key alone decides.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from api.ephemeral import new_ephemeral_id
from api.exceptions import RateLimited, error_body
from api.runtime import Runtime
from persona.brand import Brand
from persona.prompt import assemble
from persona.tokens import count_tokens
from reply.jobs import Submission
from streaming.codes import ERROR_CODES, WireError, error_code
from streaming.events import StoredEvent
from streaming.ids import new_id

router = APIRouter()

FINISH = {"stop": "stop", "length": "length", "cancelled": "stop", "fallback": "content_filter"}


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return text_of_parts(self.content, ("text",), "messages")
        return self.content or ""


def text_of_parts(parts: list[dict[str, Any]], text_types: tuple[str, ...], param: str) -> str:
    """The text of a message's content parts; a part of another type (an image, a file, audio) is
    refused: a text-only brand would answer as if it had not been sent."""
    for part in parts:
        if part.get("type", "text") not in text_types:
            raise OpenAIError.unsupported(param, f"Content parts of type '{part.get('type')}' are not supported.")
    return "".join(str(p.get("text") or "") for p in parts)


class ChatCompletionRequest(BaseModel):
    """The fields we read; anything else an OpenAI client sends is accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=64)
    messages: list[_Message] = Field(min_length=1, max_length=500)
    stream: bool = False
    stream_options: dict[str, Any] | None = None


class OpenAIError(Exception):
    """An error in OpenAI's body format. ``wire_code`` is ours (``streaming/codes.py``: the HTTP
    status and OpenAI ``type`` come from that table); ``code`` is the body's, OpenAI's word where it
    has one (``invalid_api_key``, ``model_not_found``)."""

    def __init__(
        self,
        wire_code: str,
        message: str,
        code: str | None = None,
        *,
        param: str | None = None,
        retry_after_s: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        entry = error_code(wire_code)
        self.status, self.message, self.type, self.code = entry.http_status, message, entry.openai_type, code
        self.param, self.retry_after_s, self.headers = param, retry_after_s, headers

    def with_retry_after(self, seconds: int) -> OpenAIError:
        self.retry_after_s = seconds
        return self

    @classmethod
    def of(cls, wire_code: str, message: str) -> OpenAIError:
        """Our error code as OpenAI's: status, type and OpenAI's own code word from the table."""
        return cls(wire_code, message, error_code(wire_code).openai_error_code)

    @classmethod
    def unsupported(cls, param: str, message: str, *, value: bool = True) -> OpenAIError:
        """A parameter this endpoint cannot honour: 400 with OpenAI's words for it."""
        return cls("bad_request", message, "unsupported_value" if value else "unsupported_parameter", param=param)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = dict(self.headers or {})
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(self.retry_after_s)
        return JSONResponse(self.body(), status_code=self.status, headers=headers or None)


def http_error_response(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own 404 / 405 (no route, no such method, no static file) in our error body
    instead of ``{"detail": …}``; under ``/v1/`` in OpenAI's, whose ``message`` and ``code`` are
    also the fields of ours (``{"error": {"code", "message"}}``), so either kind of client reads it."""
    status_codes = {e.http_status: e.code for e in ERROR_CODES.values()}
    code = status_codes.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal")
    path = request.url.path
    if path == "/v1" or path.startswith("/v1/"):
        invalid_url = exc.status_code in (404, 405)
        message = f"Invalid URL ({request.method} {path})" if invalid_url else str(exc.detail)
        error = OpenAIError(code, message, code, headers=dict(exc.headers or {}))
        error.status = exc.status_code
        return error.response()
    return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=dict(exc.headers or {}))


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def brands_for_key(runtime: Runtime, authorization: str | None) -> list[Brand]:
    scheme, _, key = (authorization or "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise OpenAIError("unauthorized", "You didn't provide an API key: use 'Authorization: Bearer <brand API key>'.")
    # Compare with every brand's key, in constant time per key. As bytes: compare_digest refuses
    # non-ASCII str (a TypeError, once a 500), and a header may carry any byte.
    given = key.encode("utf-8", "surrogateescape")
    matches = [b for b in runtime.brands.values() if b.api_key and hmac.compare_digest(b.api_key.encode(), given)]
    if not matches:
        raise OpenAIError("unauthorized", "Incorrect API key provided.", code="invalid_api_key")
    return matches


def brand_for(runtime: Runtime, request: Request, model: str) -> Brand:
    brands = brands_for_key(runtime, request.headers.get("authorization"))
    brand = next((b for b in brands if b.id == model), None)
    if brand is None:
        raise OpenAIError(
            "not_found", f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
        )
    origin = request.headers.get("origin")
    try:
        runtime.check_origin(brand, origin)
    except WireError:
        raise OpenAIError("forbidden", "This origin is not allowed for this brand.", code="forbidden") from None
    return brand


def history_and_text(turns: list[tuple[str, str]], max_chars: int) -> tuple[list[dict[str, Any]], str]:
    """``(role, text)`` of the client's user and assistant messages → (stored-turn history, the new
    user text)."""
    if not turns or turns[-1][0] != "user":
        raise OpenAIError("bad_request", "The last message must have role 'user'.", code="invalid_messages")
    text = turns[-1][1]
    if not text.strip():
        raise OpenAIError("bad_request", "The last user message is empty.", code="invalid_messages")
    if len(text) > max_chars:
        raise OpenAIError(
            "bad_request", f"The last user message is longer than {max_chars} characters.", code="message_too_long"
        )
    history: list[dict[str, Any]] = []
    for role, said in turns[:-1]:
        if role == "user":
            history.append({"role": "user", "text": said})
        else:
            history.append({"role": "assistant", "text": said, "status": "done"})
    return history, text


# Parameters a text-only brand cannot honour: name → is the value one we can answer as asked?
# Absent, null, empty and the default values pass (SDKs and frameworks send some of them always).
_CHAT_PARAMETERS: dict[str, Any] = {
    "tools": lambda v: not v,
    "functions": lambda v: not v,
    "tool_choice": lambda v: v in (None, "none"),
    "function_call": lambda v: v in (None, "none"),
    "response_format": lambda v: v is None or (isinstance(v, dict) and v.get("type") == "text"),
    "n": lambda v: v in (None, 1),
    "logprobs": lambda v: not v,
    "top_logprobs": lambda v: not v,
    "audio": lambda v: v is None,
    "modalities": lambda v: v is None or v == ["text"],
    "prediction": lambda v: v is None,
    "web_search_options": lambda v: v is None,
}


def refuse_unsupported(raw: dict[str, Any], rules: dict[str, Any]) -> None:
    """400 ``unsupported_value`` naming the first parameter ``rules`` cannot honour."""
    for name, honoured in rules.items():
        if name in raw and not honoured(raw[name]):
            raise OpenAIError.unsupported(name, f"'{name}' is not supported with this model: it answers in text only.")


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or 400 in OpenAI's format."""
    try:
        raw = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise OpenAIError("bad_request", "The request body is not valid JSON.") from None
    if not isinstance(raw, dict):
        raise OpenAIError("bad_request", "The request body must be a JSON object.")
    return raw


def invalid(exc: ValidationError) -> OpenAIError:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
    return OpenAIError("bad_request", f"Invalid request: {problems}")


async def start_ephemeral_reply(
    runtime: Runtime, request: Request, brand: Brand, history: list[dict[str, Any]], text: str
) -> tuple[str, Submission]:
    """Start the reply of a one-request conversation: (its conversation id, the submission).
    Raises :class:`OpenAIError` for anything refused (limits, shutting down, too long)."""
    history = runtime.newest_history(history)  # HISTORY_MAX_CHARS, as for stored conversations
    conversation_id = new_ephemeral_id()
    client = request.client.host if request.client else None
    try:
        submission = await runtime.start_reply(
            address=runtime.limits.address(client, request.headers),
            conversation_id=conversation_id,
            brand=brand,
            client_message_id=new_id("m"),
            text=text,
            history=history,
            ephemeral=True,
        )
    except RateLimited as exc:
        raise OpenAIError.of(exc.code, exc.message).with_retry_after(exc.retry_after_s) from None
    except WireError as exc:
        raise OpenAIError.of(exc.code, exc.message) from None
    return conversation_id, submission


async def first_after_start(events: AsyncIterator[StoredEvent]) -> StoredEvent | Response:
    """The reply's first event after ``start``, or, when it failed before any text, the HTTP error
    to answer with (a failure before any text can still be an HTTP error; after it, it is in-stream)."""
    first: StoredEvent | None = None
    async for event in events:
        if event.type != "start":
            first = event
            break
    if first is None or first.type == "error":
        payload = first.payload() if first is not None else {"code": "generation_lost", "message": "no reply"}
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
        return error_from_event(payload).response()
    return first


def error_from_event(payload: dict[str, Any]) -> OpenAIError:
    code = payload["code"] if payload["code"] in ERROR_CODES else "upstream_error"
    return OpenAIError.of(code, payload["message"])


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    """The brands this key may use, as OpenAI models."""
    runtime = runtime_of(request)
    try:
        brands = brands_for_key(runtime, request.headers.get("authorization"))
    except OpenAIError as exc:
        return exc.response()
    data = [{"id": b.id, "object": "model", "created": 0, "owned_by": b.name} for b in brands]
    return JSONResponse({"object": "list", "data": data})


@router.get("/v1/models/{model_id}")
async def retrieve_model(request: Request, model_id: str) -> Response:
    """One brand as an OpenAI model, when this key opens it."""
    runtime = runtime_of(request)
    try:
        brands = brands_for_key(runtime, request.headers.get("authorization"))
        brand = next((b for b in brands if b.id == model_id), None)
        if brand is None:
            message = f"The model `{model_id}` does not exist or you do not have access to it."
            raise OpenAIError("not_found", message, "model_not_found")
    except OpenAIError as exc:
        return exc.response()
    return JSONResponse({"id": brand.id, "object": "model", "created": 0, "owned_by": brand.name})


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    runtime = runtime_of(request)
    try:
        raw = await read_json(request)
        try:
            body = ChatCompletionRequest.model_validate(raw)
        except ValidationError as exc:
            raise invalid(exc) from None
        brand = brand_for(runtime, request, body.model)
        refuse_unsupported(raw, _CHAT_PARAMETERS)
        turns = [(m.role, m.text()) for m in body.messages if m.role in ("user", "assistant")]
        history, text = history_and_text(turns, runtime.settings.max_message_chars)
        conversation_id, submission = await start_ephemeral_reply(runtime, request, brand, history, text)
    except OpenAIError as exc:
        return exc.response()
    stream_id = submission.stream_id
    logger.bind(stream_id=stream_id, conversation_id=conversation_id, brand=brand.id, transport="openai").info(
        "chat completion accepted (stream={})", body.stream
    )
    events = runtime.follow(stream_id, 0, transport="openai")
    meta = {
        "id": f"chatcmpl-{stream_id}",
        "created": int(time.time()),
        "model": brand.id,
        "system_fingerprint": f"brandchat-{runtime.provider.name}-{brand.id}-v{brand.version}",
    }
    if not body.stream:
        return await _complete(runtime, brand, events, meta, history, text)
    include_usage = bool((body.stream_options or {}).get("include_usage"))
    return await _stream(runtime, brand, events, meta, stream_id, include_usage, history, text)


async def usage_of(
    brand: Brand, history: list[dict[str, Any]], text: str, reply: str, max_tokens: int
) -> dict[str, int]:
    # Re-assembling the prompt tokenises the whole history: off the event loop.
    return await asyncio.to_thread(_usage_now, brand, history, text, reply, max_tokens)


def _usage_now(brand: Brand, history: list[dict[str, Any]], text: str, reply: str, max_tokens: int) -> dict[str, int]:
    prompt_tokens = assemble(brand, history, text, max_reply_tokens=max_tokens).tokens
    completion = count_tokens(reply)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


async def _complete(
    runtime: Runtime,
    brand: Brand,
    events: AsyncIterator[StoredEvent],
    meta: dict[str, Any],
    history: list[dict[str, Any]],
    text: str,
) -> JSONResponse:
    terminal: dict[str, Any] | None = None
    async for event in events:
        if event.terminal:
            terminal = event.payload()
    assert terminal is not None  # follow() always ends with the terminal event
    if terminal["type"] == "error":
        return error_from_event(terminal).response()
    reply = terminal["text"]
    body = {
        **meta,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply, "refusal": None},
                "logprobs": None,
                "finish_reason": FINISH.get(terminal["finish_reason"], "stop"),
            }
        ],
        "usage": await usage_of(brand, history, text, reply, runtime.settings.max_reply_tokens),
    }
    return JSONResponse(body)


def _sse(obj: dict[str, Any] | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


async def _stream(
    runtime: Runtime,
    brand: Brand,
    events: AsyncIterator[StoredEvent],
    meta: dict[str, Any],
    stream_id: str,
    include_usage: bool,
    history: list[dict[str, Any]],
    text: str,
) -> Response:
    first = await first_after_start(events)
    if isinstance(first, Response):
        return first

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
        obj = {
            **meta,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            **extra,
        }
        if include_usage:
            obj["usage"] = None
        return obj

    async def body() -> AsyncIterator[bytes]:
        finished = False
        retract: dict[str, Any] | None = None
        try:
            yield _sse(chunk({"role": "assistant", "content": "", "refusal": None}))
            pending: StoredEvent | None = first
            async for event in _prepend(pending, events):
                payload = event.payload()
                if event.type == "delta" and retract is None:
                    yield _sse(chunk({"content": payload["text"]}))
                elif event.type == "retract":
                    retract = {"reason": payload["reason"], "text": payload["text"]}
                elif event.type == "done":
                    finished = True
                    extra = {"brandchat_retract": retract} if retract else {}
                    yield _sse(chunk({}, FINISH.get(payload["finish_reason"], "stop"), **extra))
                    if include_usage:
                        usage = await usage_of(brand, history, text, payload["text"], runtime.settings.max_reply_tokens)
                        yield _sse({**meta, "object": "chat.completion.chunk", "choices": [], "usage": usage})
                    yield _sse("[DONE]")
                elif event.type == "error":
                    finished = True
                    yield _sse(error_from_event(payload).body())
        finally:
            if not finished:
                # The client went away mid-reply: nobody can resume an ephemeral conversation.
                cancel = asyncio.ensure_future(runtime.manager.cancel(stream_id))
                _BACKGROUND.add(cancel)
                cancel.add_done_callback(_BACKGROUND.discard)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


_BACKGROUND: set[asyncio.Future[None]] = set()


async def _prepend(first: StoredEvent | None, rest: AsyncIterator[StoredEvent]) -> AsyncIterator[StoredEvent]:
    if first is not None:
        yield first
    async for event in rest:
        yield event
