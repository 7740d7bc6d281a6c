"""The WebSocket's own frames (docs/protocol.md §4, §9): what clients send, and the server's frames
that carry no ``seq`` (welcome, accepted, ping, pong, request-level error). Stream events are
``streaming/events.py``; this is the edge's vocabulary.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

_FRAME_TAGS = frozenset({"hello", "send", "resume", "cancel", "ping", "pong"})
# Longest ids and tokens a client may send: ours are far shorter (ids ~24 chars, tokens ~200);
# the bounds only stop a client from making us hold or log megabytes.
MAX_ID_CHARS = 128
MAX_TOKEN_CHARS = 2048
# A client_message_id longer than a valid one is not echoed back.
MAX_ECHOED_ID_CHARS = MAX_ID_CHARS

# --- client frames ---------------------------------------------------------------------------------


class _Frame(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


class HelloFrame(_Frame):
    type: Literal["hello"]
    token: str = Field(min_length=1, max_length=MAX_TOKEN_CHARS)


class SendFrame(_Frame):
    type: Literal["send"]
    client_message_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    text: str = Field(min_length=1)


class ResumeFrame(_Frame):
    type: Literal["resume"]
    stream_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    after_seq: int = Field(ge=0)


class CancelFrame(_Frame):
    type: Literal["cancel"]
    stream_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)


class PingFrame(_Frame):
    type: Literal["ping"]


class PongFrame(_Frame):
    type: Literal["pong"]


ClientFrame = Annotated[
    HelloFrame | SendFrame | ResumeFrame | CancelFrame | PingFrame | PongFrame, Field(discriminator="type")
]
_CLIENT_FRAME_ADAPTER: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)


class BadFrame(Exception):
    """A client frame that cannot be acted on; ``message`` is safe to show the client.
    ``client_message_id`` is the frame's own, echoed in the answer (docs/protocol.md §9)."""

    def __init__(self, message: str, client_message_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.client_message_id = client_message_id

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
    cmid = obj.get("client_message_id")
    echo = cmid if isinstance(cmid, str) and 0 < len(cmid) <= MAX_ECHOED_ID_CHARS else None
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise BadFrame("frame has no 'type'", echo)
    if kind not in _FRAME_TAGS:
        raise BadFrame(f"unknown frame type {kind!r}", echo)
    try:
        frame = _CLIENT_FRAME_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise BadFrame(describe_validation_error(exc), echo) from None
    if isinstance(frame, SendFrame) and len(frame.text) > max_text_chars:
        raise BadFrame(f"text is too long ({len(frame.text)} characters, the limit is {max_text_chars})", echo)
    if isinstance(frame, SendFrame) and not frame.text.strip():
        raise BadFrame("text is empty", echo)
    return frame


def describe_validation_error(exc: ValidationError) -> str:
    """One readable line per problem: ``field: what is wrong``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int) or len(err["loc"]) == 1)
        loc = loc.split(".", 1)[-1] if "." in loc and loc.split(".")[0] in _FRAME_TAGS else loc
        parts.append(f"{loc or 'body'}: {err['msg']}")
    return "; ".join(parts)


# --- server frames without a seq (WebSocket, §4 and §9) ---------------------------------------------


class _ServerFrame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def encode(self) -> str:
        return self.model_dump_json(exclude_none=True)


class Welcome(_ServerFrame):
    type: Literal["welcome"] = "welcome"
    conversation_id: str
    heartbeat_ms: int


class Accepted(_ServerFrame):
    type: Literal["accepted"] = "accepted"
    client_message_id: str
    stream_id: str


class Ping(_ServerFrame):
    type: Literal["ping"] = "ping"


class Pong(_ServerFrame):
    type: Literal["pong"] = "pong"


class RequestErrorFrame(_ServerFrame):
    """An ``error`` with no ``seq``: a refused frame, or a stream that cannot be followed. The
    connection stays open. ``retryable`` is sent only about a stream (``stream_expired``)."""

    type: Literal["error"] = "error"
    code: str
    message: str
    stream_id: str | None = None
    client_message_id: str | None = None
    retryable: bool | None = None
    retry_after_ms: int | None = None  # rate_limited: when sending again may succeed


class Ended(_ServerFrame):
    """The answer to a ``resume`` at or after the stream's terminal event (PROTOCOL §9): nothing
    more will come; ``last_seq`` is the terminal event's seq."""

    type: Literal["ended"] = "ended"
    stream_id: str
    last_seq: int


ServerFrame = Welcome | Accepted | Ping | Pong | RequestErrorFrame | Ended

# Sent when nothing else was for heartbeat_ms: encoded once.
PING = Ping().encode()
