"""The wire schema, defined once for every transport (PROTOCOL.md §3 and §4).

Stream events are stored and fanned out as :class:`StoredEvent` — the sequence number, the
type and the JSON text serialised once at append time — so a thousand followers of one stream
share one string instead of re-encoding it per socket. The pydantic models below are the
schema of that JSON; :func:`parse_client_frame` validates what clients send.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

FinishReason = Literal["stop", "length", "cancelled", "fallback"]
TERMINAL_TYPES = frozenset({"done", "error"})


class StoredEvent(NamedTuple):
    """One numbered event of a stream, as kept in the buffer and sent on the wire."""

    seq: int
    type: str
    data: str  # the full JSON object, including type, stream_id and seq

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    def payload(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.data)
        return result


# --- stream events (server → client, identical on every transport) ----------------------------


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stream_id: str
    seq: int


class StartEvent(_Event):
    type: Literal["start"] = "start"
    conversation_id: str
    client_message_id: str


class DeltaEvent(_Event):
    type: Literal["delta"] = "delta"
    text: str


class RetractEvent(_Event):
    type: Literal["retract"] = "retract"
    reason: str
    text: str


class DoneEvent(_Event):
    type: Literal["done"] = "done"
    finish_reason: FinishReason
    text: str


class ErrorEvent(_Event):
    type: Literal["error"] = "error"
    code: str
    message: str
    retryable: bool


StreamEvent = Annotated[StartEvent | DeltaEvent | RetractEvent | DoneEvent | ErrorEvent, Field(discriminator="type")]
STREAM_EVENT_ADAPTER: TypeAdapter[StreamEvent] = TypeAdapter(StreamEvent)


def encode(event: _Event) -> StoredEvent:
    return StoredEvent(event.seq, event.type, event.model_dump_json())  # type: ignore[attr-defined]


# --- client frames (WebSocket, §4) ----------------------------------------------------------------


class _Frame(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


class HelloFrame(_Frame):
    type: Literal["hello"]
    token: str = Field(min_length=1, max_length=2048)


class SendFrame(_Frame):
    type: Literal["send"]
    client_message_id: str = Field(min_length=1, max_length=128)
    text: str = Field(min_length=1)


class ResumeFrame(_Frame):
    type: Literal["resume"]
    stream_id: str = Field(min_length=1, max_length=128)
    after_seq: int = Field(ge=0)


class CancelFrame(_Frame):
    type: Literal["cancel"]
    stream_id: str = Field(min_length=1, max_length=128)


class PingFrame(_Frame):
    type: Literal["ping"]


class PongFrame(_Frame):
    type: Literal["pong"]


ClientFrame = Annotated[
    HelloFrame | SendFrame | ResumeFrame | CancelFrame | PingFrame | PongFrame, Field(discriminator="type")
]
_CLIENT_FRAME_ADAPTER: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)


class BadFrame(Exception):
    """A client frame that cannot be acted on; ``message`` is safe to show the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"BadFrame({self.message!r})"


def parse_client_frame(raw: str, *, max_text_chars: int) -> ClientFrame:
    """Validate one client frame. Raises :class:`BadFrame` with a readable reason."""
    try:
        obj = json.loads(raw)
    except ValueError:
        raise BadFrame("frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise BadFrame("frame must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise BadFrame("frame has no 'type'")
    if kind not in {"hello", "send", "resume", "cancel", "ping", "pong"}:
        raise BadFrame(f"unknown frame type {kind!r}")
    try:
        frame = _CLIENT_FRAME_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise BadFrame(describe_validation_error(exc)) from None
    if isinstance(frame, SendFrame) and len(frame.text) > max_text_chars:
        raise BadFrame(f"text is too long ({len(frame.text)} characters, the limit is {max_text_chars})")
    if isinstance(frame, SendFrame) and not frame.text.strip():
        raise BadFrame("text is empty")
    return frame


def describe_validation_error(exc: ValidationError) -> str:
    """One readable line per problem: ``field: what is wrong``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int) or len(err["loc"]) == 1)
        loc = loc.split(".", 1)[-1] if "." in loc and loc.split(".")[0] in _FRAME_TAGS else loc
        parts.append(f"{loc or 'body'}: {err['msg']}")
    return "; ".join(parts)


_FRAME_TAGS = frozenset({"hello", "send", "resume", "cancel", "ping", "pong"})


def server_frame(kind: str, **fields: Any) -> str:
    """A non-stream server frame (welcome, accepted, pong, ping, error without seq)."""
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))
