"""The rules of one stream, with no I/O (the Sans-I/O core).

* :class:`StreamWriter` is the single writer of a stream: it numbers events ``1, 2, 3 …`` with no
  gaps, puts ``start`` first, allows exactly one terminal event, enforces the size cap and keeps
  the reply text so that ``done.text`` always equals the deltas joined (after a ``retract``, its
  text plus later deltas).
* :class:`Cursor` is a reader's position: it delivers each event once and in order and tells a
  follower when it has missed events and must re-read the log.
* :func:`check_replay` refuses a partial replay (the buffer lost the head of a stream).
* :func:`fold_text` rebuilds the reply text from events, for history and for tests.

Everything here is plain Python and tested without an event loop.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson

from streaming.events import (
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    FinishReason,
    RetractEvent,
    StartEvent,
    StoredEvent,
    encode,
)
from streaming.exceptions import StreamExpired


class StreamClosed(RuntimeError):
    """An event was written after the terminal event (a bug in the caller)."""


class StreamFull(RuntimeError):
    """The stream reached its size cap; the caller ends it with ``finish_reason: length``."""


@dataclass
class StreamWriter:
    stream_id: str
    max_events: int  # STREAM_MAX_EVENTS
    max_chars: int  # STREAM_MAX_CHARS
    seq: int = 0
    terminal: bool = False
    _started: bool = field(default=False, repr=False)
    # The reply text as the pieces it arrived in: joined once when asked for, not grown with `+=`
    # per delta (quadratic over a long reply).
    _parts: list[str] = field(default_factory=list, repr=False)
    _length: int = field(default=0, repr=False)

    @property
    def text(self) -> str:
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    @text.setter
    def text(self, value: str) -> None:
        self._parts[:] = [value] if value else []
        self._length = len(value)

    @property
    def length(self) -> int:
        """``len(self.text)``, without joining."""
        return self._length

    def start(self, conversation_id: str, client_message_id: str) -> StoredEvent:
        if self._started:
            raise StreamClosed(f"stream {self.stream_id} already started")
        self._started = True
        return self._emit(
            StartEvent(
                stream_id=self.stream_id,
                seq=self.seq + 1,
                conversation_id=conversation_id,
                client_message_id=client_message_id,
            )
        )

    def room(self) -> int:
        """How many more characters of reply text fit (0 means: end the stream now).

        One event is always kept in reserve for the terminal event."""
        if self.seq + 2 > self.max_events:
            return 0
        return max(0, self.max_chars - self._length)

    def delta(self, text: str) -> StoredEvent:
        self._check_open()
        if not text:
            raise ValueError("empty delta")
        if len(text) > self.room():
            raise StreamFull(f"stream {self.stream_id} is full")
        self._parts.append(text)
        self._length += len(text)
        self.seq += 1
        return StoredEvent(self.seq, "delta", delta_json(self.stream_id, self.seq, text))

    def retract(self, reason: str, text: str) -> StoredEvent:
        self._check_open()
        self.text = text
        return self._emit(RetractEvent(stream_id=self.stream_id, seq=self.seq + 1, reason=reason, text=text))

    def done(self, finish_reason: FinishReason) -> StoredEvent:
        self._check_open()
        event = self._emit(
            DoneEvent(stream_id=self.stream_id, seq=self.seq + 1, finish_reason=finish_reason, text=self.text)
        )
        self.terminal = True
        return event

    def error(self, code: str, message: str, *, retryable: bool) -> StoredEvent:
        self._check_open()
        event = self._emit(
            ErrorEvent(stream_id=self.stream_id, seq=self.seq + 1, code=code, message=message, retryable=retryable)
        )
        self.terminal = True
        return event

    def _check_open(self) -> None:
        if not self._started:
            raise StreamClosed(f"stream {self.stream_id} has no start event yet")
        if self.terminal:
            raise StreamClosed(f"stream {self.stream_id} already ended")

    def _emit(self, event: StartEvent | DeltaEvent | RetractEvent | DoneEvent | ErrorEvent) -> StoredEvent:
        self.seq = event.seq
        return encode(event)


def delta_json(stream_id: str, seq: int, text: str) -> str:
    """A delta event's JSON, byte for byte what ``encode(DeltaEvent(...))`` gives, without building and
    validating a pydantic model per word (issue 10; a property test holds the two equal)."""
    try:
        return orjson.dumps({"stream_id": stream_id, "seq": seq, "type": "delta", "text": text}).decode()
    except TypeError:  # text orjson will not encode (a lone surrogate): the model says what to do
        return encode(DeltaEvent(stream_id=stream_id, seq=seq, text=text)).data


class Verdict(enum.Enum):
    DELIVER = "deliver"
    DUPLICATE = "duplicate"  # already delivered: drop it
    GAP = "gap"  # events are missing before this one: re-read the log from the cursor


@dataclass
class Cursor:
    """A reader's position in one stream: the last ``seq`` delivered."""

    after_seq: int = 0
    finished: bool = False

    def judge(self, event: StoredEvent) -> Verdict:
        if event.seq <= self.after_seq or self.finished:
            return Verdict.DUPLICATE
        if event.seq > self.after_seq + 1:
            return Verdict.GAP
        return Verdict.DELIVER

    def advance(self, event: StoredEvent) -> None:
        if event.seq != self.after_seq + 1:
            raise ValueError(f"cursor at {self.after_seq} cannot take seq {event.seq}")
        self.after_seq = event.seq
        self.finished = event.terminal

    def take(self, events: Iterable[StoredEvent]) -> list[StoredEvent]:
        """The events to deliver from a batch, in order, stopping at the first gap."""
        out: list[StoredEvent] = []
        for event in events:
            verdict = self.judge(event)
            if verdict is Verdict.DUPLICATE:
                continue
            if verdict is Verdict.GAP:
                break
            self.advance(event)
            out.append(event)
        return out


def check_replay(stream_id: str, after_seq: int, events: Sequence[StoredEvent]) -> None:
    """Raise :class:`StreamExpired` when a read from the log does not continue at ``after_seq + 1``.

    That happens when the buffer lost part of the stream (Redis restarted without persistence while
    a writer kept appending): a partial replay would silently drop words, so the client is told."""
    if events and events[0].seq != after_seq + 1:
        raise StreamExpired(f"stream {stream_id} no longer holds the events after seq {after_seq}", stream_id=stream_id)


def fold_text(events: Iterable[StoredEvent]) -> str:
    """The reply text the events add up to (what ``done.text`` will say)."""
    parts: list[str] = []
    for event in events:
        if event.type == "delta":
            parts.append(event.payload()["text"])
        elif event.type == "retract" or event.type == "done":
            parts = [event.payload()["text"]]
    return "".join(parts)
