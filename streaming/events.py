"""The stream events, defined once for every transport (docs/protocol.md §3).

Stream events are stored and fanned out as :class:`StoredEvent` — the sequence number, the
type and the JSON text serialised once at append time — so a thousand followers of one stream
share one string instead of re-encoding it per socket. The pydantic models below are the
schema of that JSON. The WebSocket's own frames (hello, welcome, …) are the edge's: ``api/frames.py``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

FinishReason = Literal["stop", "length", "cancelled", "fallback"]
# The reason of a retract written when another instance took a reply over (PROTOCOL §9).
FAILOVER_REASON = "failover"
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
