"""OpenAI's Responses API, text only: ``POST /v1/responses`` (streaming and not).

Clients that default to it (the Vercel AI SDK's ``openai("…")`` provider, ``client.responses.create``
in the official SDKs) reach the brand through the same :class:`GenerationManager`, persona and guard
as ``/v1/chat/completions``; this module only speaks the other format. The rules of
``api/openai_compat.py`` hold here too (brand API key, ``model`` = brand id, origins, limits, an
ephemeral conversation per request, a disconnect cancels, failures before text are HTTP errors).

Mapping:

* ``input`` is a string (the user's message) or a list of message items (``role`` +
  ``content`` as a string or ``input_text`` / ``output_text`` parts); ``instructions`` and
  ``system`` / ``developer`` messages are **ignored** (the brand file is the persona).
* Refused with 400 ``unsupported_value`` / ``unsupported_parameter`` (``param`` names it):
  ``tools``, ``text.format`` other than text, ``previous_response_id`` / ``conversation`` (nothing
  is stored), ``background``, ``prompt`` templates, items that are not messages, non-text parts.
* The response: one ``message`` output item with one ``output_text`` part; ``status`` is
  ``completed``, or ``incomplete`` with ``incomplete_details.reason`` ``max_output_tokens`` (the
  reply hit its length) or ``content_filter`` (the guard replaced it: a non-streaming response
  carries the brand's fallback text).
* Streaming: ``response.created``, ``response.in_progress``, ``response.output_item.added``,
  ``response.content_part.added``, ``response.output_text.delta`` …, ``response.output_text.done``,
  ``response.content_part.done``, ``response.output_item.done``, then ``response.completed`` or
  ``response.incomplete``; each SSE message has ``event:`` = its ``type`` and a growing
  ``sequence_number``. A ``retract`` cannot be expressed: the text sent stays, no more follows, and
  the final response carries ``brandchat_retract: {reason, text}`` (as the chat chunks do). A
  failure after text is an ``error`` event followed by ``response.failed``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.openai_compat import (
    OpenAIError,
    brand_for,
    error_from_event,
    first_after_start,
    history_and_text,
    invalid,
    read_json,
    refuse_unsupported,
    runtime_of,
    start_ephemeral_reply,
    text_of_parts,
    usage_of,
)
from api.runtime import Runtime
from persona.brand import Brand
from streaming.events import StoredEvent

router = APIRouter()

# How a reply ended → (status, incomplete_details.reason).
ENDING: dict[str, tuple[str, str | None]] = {
    "stop": ("completed", None),
    "cancelled": ("completed", None),
    "length": ("incomplete", "max_output_tokens"),
    "fallback": ("incomplete", "content_filter"),
}

_PARAMETERS: dict[str, Callable[[Any], bool]] = {
    "tools": lambda v: not v,
    "text": lambda v: (
        v is None or not isinstance(v, dict) or (v.get("format") or {"type": "text"}).get("type") == "text"
    ),
    "previous_response_id": lambda v: v is None,
    "conversation": lambda v: v is None,
    "background": lambda v: not v,
    "prompt": lambda v: v is None,
}

_TEXT_PARTS = ("input_text", "output_text", "text")


class _InputMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = "message"
    role: str
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return text_of_parts(self.content, _TEXT_PARTS, "input")


class ResponsesRequest(BaseModel):
    """The fields we read; anything else an OpenAI client sends is accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=64)
    input: str | list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False

    def turns(self) -> list[tuple[str, str]]:
        if isinstance(self.input, str):
            return [("user", self.input)]
        turns: list[tuple[str, str]] = []
        for item in self.input:
            if item.get("type", "message") != "message":
                raise OpenAIError.unsupported("input", f"Input items of type '{item.get('type')}' are not supported.")
            try:
                message = _InputMessage.model_validate(item)
            except ValidationError as exc:
                raise invalid(exc) from None
            if message.role in ("user", "assistant"):
                turns.append((message.role, message.text()))
        return turns


@router.post("/v1/responses")
async def create_response(request: Request) -> Response:
    runtime = runtime_of(request)
    try:
        raw = await read_json(request)
        try:
            body = ResponsesRequest.model_validate(raw)
        except ValidationError as exc:
            raise invalid(exc) from None
        brand = brand_for(runtime, request, body.model)
        refuse_unsupported(raw, _PARAMETERS)
        history, text = history_and_text(body.turns(), runtime.settings.max_message_chars)
        conversation_id, submission = await start_ephemeral_reply(runtime, request, brand, history, text)
    except OpenAIError as exc:
        return exc.response()
    stream_id = submission.stream_id
    logger.bind(stream_id=stream_id, conversation_id=conversation_id, brand=brand.id, transport="openai").info(
        "response accepted (stream={})", body.stream
    )
    shape = _Shape(stream_id, brand, raw)
    events = runtime.follow(stream_id, 0, transport="openai")

    async def usage(reply: str) -> dict[str, Any]:
        counts = await usage_of(brand, history, text, reply, runtime.settings.max_reply_tokens)
        return {
            "input_tokens": counts["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": counts["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": counts["total_tokens"],
        }

    if not body.stream:
        terminal: dict[str, Any] | None = None
        async for event in events:
            if event.terminal:
                terminal = event.payload()
        assert terminal is not None  # follow() always ends with the terminal event
        if terminal["type"] == "error":
            return error_from_event(terminal).response()
        return JSONResponse(shape.response(terminal["finish_reason"], terminal["text"], await usage(terminal["text"])))
    return await _stream(runtime, shape, events, usage)


class _Shape:
    """The Responses API objects of one reply."""

    def __init__(self, stream_id: str, brand: Brand, raw: dict[str, Any]) -> None:
        self.id, self.item_id = f"resp_{stream_id}", f"msg_{stream_id}"
        self.created_at = int(time.time())
        self.model = brand.id
        self.metadata = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}

    def item(self, text: str | None, status: str = "completed") -> dict[str, Any]:
        content = [] if text is None else [self.part(text)]
        return {"type": "message", "id": self.item_id, "status": status, "role": "assistant", "content": content}

    @staticmethod
    def part(text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def response(
        self,
        finish_reason: str | None,
        text: str | None,
        usage: dict[str, Any] | None,
        *,
        error: dict[str, Any] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        if error is not None:
            status, reason = "failed", None
        elif finish_reason is None:
            status, reason = "in_progress", None
        else:
            status, reason = ENDING.get(finish_reason, ("completed", None))
        item_status = "completed" if status == "completed" else "incomplete"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": error,
            "incomplete_details": {"reason": reason} if reason else None,
            "instructions": None,
            "max_output_tokens": None,
            "model": self.model,
            "output": [] if text is None else [self.item(text, item_status)],
            "parallel_tool_calls": False,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "store": False,
            "temperature": None,
            "text": {"format": {"type": "text"}},
            "tool_choice": "none",
            "tools": [],
            "top_p": None,
            "truncation": "disabled",
            "usage": usage,
            "metadata": self.metadata,
            **extra,
        }


async def _stream(
    runtime: Runtime,
    shape: _Shape,
    events: AsyncIterator[StoredEvent],
    usage: Callable[[str], Any],
) -> Response:
    first = await first_after_start(events)
    if isinstance(first, Response):
        return first

    sequence = 0

    def sse(obj: dict[str, Any]) -> bytes:
        nonlocal sequence
        obj["sequence_number"] = sequence
        sequence += 1
        return f"event: {obj['type']}\ndata: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()

    where = {"item_id": shape.item_id, "output_index": 0, "content_index": 0}

    async def body() -> AsyncIterator[bytes]:
        finished = False
        retract: dict[str, Any] | None = None
        sent: list[str] = []
        try:
            yield sse({"type": "response.created", "response": shape.response(None, None, None)})
            yield sse({"type": "response.in_progress", "response": shape.response(None, None, None)})
            yield sse(
                {"type": "response.output_item.added", "output_index": 0, "item": shape.item(None, "in_progress")}
            )
            yield sse({"type": "response.content_part.added", **where, "part": shape.part("")})
            async for event in _prepend(first, events):
                payload = event.payload()
                if event.type == "delta" and retract is None:
                    sent.append(payload["text"])
                    yield sse({"type": "response.output_text.delta", **where, "delta": payload["text"], "logprobs": []})
                elif event.type == "retract":
                    retract = {"reason": payload["reason"], "text": payload["text"]}
                elif event.type == "done":
                    finished = True
                    text = "".join(sent)
                    yield sse({"type": "response.output_text.done", **where, "text": text, "logprobs": []})
                    yield sse({"type": "response.content_part.done", **where, "part": shape.part(text)})
                    final = shape.response(
                        payload["finish_reason"],
                        text,
                        await usage(payload["text"]),
                        **({"brandchat_retract": retract} if retract else {}),
                    )
                    yield sse({"type": "response.output_item.done", "output_index": 0, "item": final["output"][0]})
                    kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
                    yield sse({"type": kind, "response": final})
                elif event.type == "error":
                    finished = True
                    error = error_from_event(payload)
                    yield sse({"type": "error", "code": error.code, "message": error.message, "param": None})
                    failed = shape.response(
                        None, "".join(sent), None, error={"code": "server_error", "message": error.message}
                    )
                    yield sse({"type": "response.failed", "response": failed})
        finally:
            if not finished:
                # The client went away mid-reply: nobody can resume an ephemeral conversation.
                cancel = asyncio.ensure_future(runtime.manager.cancel(shape.id.removeprefix("resp_")))
                _BACKGROUND.add(cancel)
                cancel.add_done_callback(_BACKGROUND.discard)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


_BACKGROUND: set[asyncio.Future[None]] = set()


async def _prepend(first: StoredEvent, rest: AsyncIterator[StoredEvent]) -> AsyncIterator[StoredEvent]:
    yield first
    async for event in rest:
        yield event
