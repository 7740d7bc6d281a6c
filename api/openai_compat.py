"""OpenAI-compatible Chat Completions (docs/protocol.md §7): any OpenAI client can talk to a brand.

``POST /v1/chat/completions`` with ``Authorization: Bearer <the brand's API key>`` and
``model: <brand id>``. It is a thin adapter over the same :class:`GenerationManager` as the
WebSocket and SSE transports, so the brand's persona, prompt assembly, memory rules (history
trimmed to the budget in whole exchanges, older ones summarised) and streaming guard all apply.

Mapping (where OpenAI's format has no word for ours, the choice and why):

* ``system`` / ``developer`` messages from the client are **ignored**: the brand file is the
  persona, and letting a caller replace it would bypass the brand's rules. ``user`` and
  ``assistant`` messages are the history; the last message must be a ``user`` message.
  ``temperature``, ``max_tokens``, ``n`` … are ignored too: the brand's model settings apply.
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

from api.ephemeral import new_ephemeral_id
from api.exceptions import RateLimited
from api.runtime import Runtime
from persona.brand import Brand
from persona.prompt import assemble
from persona.tokens import count_tokens
from reply.exceptions import ShuttingDown
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
            return "".join(str(p.get("text") or "") for p in self.content if p.get("type", "text") == "text")
        return self.content or ""


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
        self, wire_code: str, message: str, code: str | None = None, *, retry_after_s: int | None = None
    ) -> None:
        super().__init__(message)
        entry = error_code(wire_code)
        self.status, self.message, self.type, self.code = entry.http_status, message, entry.openai_type, code
        self.retry_after_s = retry_after_s

    def with_retry_after(self, seconds: int) -> OpenAIError:
        self.retry_after_s = seconds
        return self

    @classmethod
    def of(cls, wire_code: str, message: str) -> OpenAIError:
        """Our error code as OpenAI's: status, type and OpenAI's own code word from the table."""
        return cls(wire_code, message, error_code(wire_code).openai_error_code)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": None, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(self.retry_after_s)} if self.retry_after_s is not None else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _brands_for_key(runtime: Runtime, authorization: str | None) -> list[Brand]:
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


def _brand(runtime: Runtime, request: Request, model: str) -> Brand:
    brands = _brands_for_key(runtime, request.headers.get("authorization"))
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


def _history(messages: list[_Message], max_chars: int) -> tuple[list[dict[str, Any]], str]:
    """Client messages → (stored-turn history, the new user text)."""
    turns = [m for m in messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user":
        raise OpenAIError("bad_request", "The last message must have role 'user'.", code="invalid_messages")
    text = turns[-1].text()
    if not text.strip():
        raise OpenAIError("bad_request", "The last user message is empty.", code="invalid_messages")
    if len(text) > max_chars:
        raise OpenAIError(
            "bad_request", f"The last user message is longer than {max_chars} characters.", code="message_too_long"
        )
    history: list[dict[str, Any]] = []
    for message in turns[:-1]:
        if message.role == "user":
            history.append({"role": "user", "text": message.text()})
        else:
            history.append({"role": "assistant", "text": message.text(), "status": "done"})
    return history, text


def _error_from_event(payload: dict[str, Any]) -> OpenAIError:
    code = payload["code"] if payload["code"] in ERROR_CODES else "upstream_error"
    return OpenAIError.of(code, payload["message"])


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    """The brands this key may use, as OpenAI models."""
    runtime = _runtime(request)
    try:
        brands = _brands_for_key(runtime, request.headers.get("authorization"))
    except OpenAIError as exc:
        return exc.response()
    data = [{"id": b.id, "object": "model", "created": 0, "owned_by": b.name} for b in brands]
    return JSONResponse({"object": "list", "data": data})


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    runtime = _runtime(request)
    try:
        try:
            raw = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise OpenAIError("bad_request", "The request body is not valid JSON.") from None
        try:
            body = ChatCompletionRequest.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
            raise OpenAIError("bad_request", f"Invalid request: {problems}") from None
        brand = _brand(runtime, request, body.model)
        history, text = _history(body.messages, runtime.settings.max_message_chars)
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
        except ShuttingDown as exc:
            raise OpenAIError.of(exc.code, exc.message) from None
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


async def _usage(brand: Brand, history: list[dict[str, Any]], text: str, reply: str, max_tokens: int) -> dict[str, int]:
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
        return _error_from_event(terminal).response()
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
        "usage": await _usage(brand, history, text, reply, runtime.settings.max_reply_tokens),
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
    # Wait for the first event after `start` so a failure before any text can still be an HTTP error.
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
        return _error_from_event(payload).response()

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
                        usage = await _usage(brand, history, text, payload["text"], runtime.settings.max_reply_tokens)
                        yield _sse({**meta, "object": "chat.completion.chunk", "choices": [], "usage": usage})
                    yield _sse("[DONE]")
                elif event.type == "error":
                    finished = True
                    yield _sse(_error_from_event(payload).body())
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
