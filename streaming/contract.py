"""The buffer contract, in its three concepts, and the typed records it keeps.

A buffer backend (memory, Redis) implements all three; each user of it depends on the part it needs:

* :class:`StreamLog` — per stream, the append-only event log, its metadata and live followers;
* :class:`ConversationStore` — per conversation, the turns and the ``client_message_id → stream_id``
  map that makes sends idempotent;
* :class:`ControlBus` — the one control message that must cross instances: "cancel this stream";
* :class:`ProducerLeases` — which instance produces a stream, so another can take over when it dies.

:class:`~streaming.buffer.StreamBuffer` is the three together plus the lifecycle (start, close,
ping); :func:`~streaming.buffer.make_buffer` picks a backend by URL scheme.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from streaming.events import StoredEvent
from streaming.fanout import Subscription

ReplyStatus = Literal["streaming", "done", "error"]


@dataclass(frozen=True)
class BufferOptions:
    conversation_ttl_s: int  # how long a conversation is kept after its last write
    resume_window_s: int  # how long a finished stream stays resumable
    subscription_maxsize: int  # live events queued per follower before it re-reads the log
    lease_ttl_s: float  # a producer that stops renewing for this long may be taken over
    outage_deadline_s: float  # appends wait this long for an unreachable backend, then fail
    # Redis: a write starts at most this long after the previous one started, gathering what every
    # stream appended meanwhile into one script call (0: each write as soon as the last one answered).
    write_gather_s: float = 0.0


@dataclass(frozen=True)
class StreamInfo:
    stream_id: str
    conversation_id: str
    created_at: float  # epoch seconds
    terminal: bool
    last_seq: int | None = None  # the terminal event's seq, once the stream ended

    def ended_by(self, after_seq: int) -> bool:
        """True when a reader at ``after_seq`` has already seen the terminal event."""
        return self.last_seq is not None and after_seq >= self.last_seq


@dataclass(frozen=True)
class UserTurn:
    """A user message; ``tokens``: its text's token count, stored when it was written (the prompt
    reads it instead of tokenising the history again; ``None`` in turns stored before)."""

    text: str
    client_message_id: str
    role: Literal["user"] = "user"
    tokens: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class AssistantTurn:
    """An assistant reply; ``text``, ``status`` and ``tokens`` (the text's token count) are set once
    its stream ended."""

    stream_id: str
    text: str | None = None
    status: ReplyStatus | None = None
    role: Literal["assistant"] = "assistant"
    tokens: int | None = field(default=None, compare=False)


Turn = UserTurn | AssistantTurn


def turn_to_dict(turn: Turn) -> dict[str, Any]:
    """The wire shape of docs/protocol.md §6 (fields that are unset are left out)."""
    if isinstance(turn, UserTurn):
        return {"role": "user", "text": turn.text, "client_message_id": turn.client_message_id}
    out: dict[str, Any] = {"role": "assistant", "stream_id": turn.stream_id}
    if turn.text is not None:
        out["text"] = turn.text
    if turn.status is not None:
        out["status"] = turn.status
    return out


def turn_record(turn: Turn) -> dict[str, Any]:
    """What is stored, and what a prompt reads: the wire shape plus the stored token count."""
    out = turn_to_dict(turn)
    if turn.tokens is not None:
        out["tokens"] = turn.tokens
    return out


def turn_from_dict(raw: dict[str, Any]) -> Turn:
    tokens = raw.get("tokens")
    tokens = int(tokens) if tokens is not None else None
    if raw.get("role") == "user":
        return UserTurn(text=str(raw["text"]), client_message_id=str(raw["client_message_id"]), tokens=tokens)
    return AssistantTurn(stream_id=str(raw["stream_id"]), text=raw.get("text"), status=raw.get("status"), tokens=tokens)


def encode_turn(turn: Turn) -> str:
    return json.dumps(turn_record(turn), separators=(",", ":"))


def decode_turn(raw: str) -> Turn:
    return turn_from_dict(json.loads(raw))


class StreamLog(Protocol):
    """Per stream: the append-only event log and its live followers. Coroutine-safe.

    Cancelling any coroutine here is safe: reads have no side effects, and a cancelled append may
    still be written (its events are numbered, so a retry cannot duplicate them)."""

    async def create_stream(
        self, stream_id: str, conversation_id: str, ttl_s: int, client_message_id: str | None = None
    ) -> str:
        """Record a new, empty stream that lives ``ttl_s`` at most unless ended earlier.

        With ``client_message_id``, also :meth:`ConversationStore.claim_message` it for this stream,
        in the same step (one round trip on Redis); returns the stream that won the id (``stream_id``
        when no id is given)."""

    async def append(self, stream_id: str, events: Sequence[StoredEvent], *, expire_after_s: int | None = None) -> None:
        """Append events (already numbered by the single writer) and tell live followers.

        ``expire_after_s`` is given with the terminal event: the stream is marked terminal and
        expires that long after. Appends are fenced: :class:`~streaming.exceptions.LeaseLost` when
        another instance took the stream over; ``BufferUnavailable`` when the backend stayed
        unreachable past its outage deadline (the events are kept and written back if it returns)."""

    async def read_after(self, stream_id: str, after_seq: int) -> list[StoredEvent]:
        """The events with ``seq > after_seq``, in order. Raises ``StreamExpired`` if unknown."""

    async def stream_info(self, stream_id: str) -> StreamInfo | None:
        """Metadata of a stream, or ``None`` when the buffer does not hold it."""

    async def end_abandoned(self, stream_id: str, code: str, message: str) -> None:
        """End a stream whose writer is gone with a retryable ``error``, atomically: a no-op if
        the stream already ended, and safe to race with other followers doing the same."""

    def subscribe(self, stream_id: str) -> AbstractAsyncContextManager[Subscription]:
        """Receive live events of a stream; active (nothing missed) once entered."""


class ConversationStore(Protocol):
    """Per conversation: turns and idempotent sends. Coroutine-safe."""

    async def claim_message(self, conversation_id: str, client_message_id: str, stream_id: str) -> str:
        """Atomically bind a client message id to a stream; returns the stream that won."""

    async def add_turn(self, conversation_id: str, *turns: Turn) -> None:
        """Append turns, in order (a user message, an assistant reply still streaming): one write."""

    async def finish_reply(
        self, conversation_id: str, stream_id: str, text: str, status: ReplyStatus, *, tokens: int | None = None
    ) -> None:
        """Record the final text and status of an assistant turn."""

    async def history(self, conversation_id: str) -> list[Turn]:
        """The conversation's turns, oldest first; ended assistant turns carry text and status."""


CancelHandler = Callable[[str], Coroutine[Any, Any, None]]


class ControlBus(Protocol):
    """Control messages between instances."""

    async def request_cancel(self, stream_id: str) -> None:
        """Ask whichever instance runs the stream's generation to cancel it."""

    def on_cancel(self, callback: CancelHandler) -> None:
        """Register the local handler for cancel requests (from any instance)."""


@dataclass(frozen=True)
class StreamOrigin:
    """What a stream's producer keeps with it: enough for another instance to continue the reply,
    and for the producer to write back what a restarted Redis lost."""

    conversation_id: str
    client_message_id: str
    turns: tuple[Turn, ...]  # the conversation up to and including this message's two turns
    job: str  # the reply pipeline's record (opaque JSON), handed to whoever takes the stream over

    def encode(self) -> str:
        return json.dumps(
            {
                "c": self.conversation_id,
                "m": self.client_message_id,
                "turns": [turn_record(t) for t in self.turns],
                "job": self.job,
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, raw: str) -> StreamOrigin:
        obj = json.loads(raw)
        turns = tuple(turn_from_dict(t) for t in obj["turns"])
        return cls(str(obj["c"]), str(obj["m"]), turns, str(obj["job"]))


@dataclass(frozen=True)
class Orphan:
    """A stream whose producer stopped renewing its lease, now leased to this instance."""

    stream_id: str
    origin: StreamOrigin
    events: list[StoredEvent]  # the durable log so far
    created_at: float  # epoch seconds
    cancel_requested: bool


LeaseLostHandler = Callable[[str], None]


class ProducerLeases(Protocol):
    """Exactly one producer per stream. A producer holds a lease that its appends renew (and a
    timer, between appends); when it stops renewing (the process died or was paused), any instance
    may take the stream over and continue it. The memory backend is one process: it never has
    orphans."""

    async def start_production(self, stream_id: str, origin: StreamOrigin, first: Sequence[StoredEvent]) -> None:
        """Become the stream's producer: keep ``origin`` with it and append its first events (the
        ``start``); from then on appends renew the lease. Raises like :meth:`StreamLog.append`."""

    async def orphans(self) -> list[str]:
        """Open streams whose lease has expired (a bounded batch)."""

    async def take_over(self, stream_id: str) -> Orphan | None:
        """Atomically make this instance the stream's producer, if its lease is still expired and
        it has not ended; ``None`` when another instance was first or it is not an orphan."""

    def on_lease_lost(self, callback: LeaseLostHandler) -> None:
        """Register the local handler told when another instance took over one of our streams."""
