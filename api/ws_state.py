"""The rules of one WebSocket connection, with no I/O (docs/protocol.md §4, §9).

:class:`WsProtocol` takes each raw client message and says what it is: a frame for the adapter to
act on, an ``error`` frame to answer with (the connection stays open), or a reason to close
(:class:`CloseConnection`). It enforces, in this order: the flood bucket (close 4429), the frame
size (close 1009), JSON and schema validity, hello first and once, and the bad-frame budget (close
4400). :func:`check_stream_owner` is the ownership rule for ``resume`` and ``cancel``.

``api/ws.py`` is the adapter that moves frames between the socket and this object; everything
here is tested without a socket (``tests/test_ws_state.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from api.exceptions import Forbidden
from api.frames import (
    BadFrame,
    ClientFrame,
    HelloFrame,
    PongFrame,
    RequestErrorFrame,
    parse_client_frame,
)
from streaming.codes import Close
from streaming.contract import StreamInfo
from streaming.exceptions import StreamExpired

# What a binary frame becomes: it fails JSON parsing and is answered as a bad frame.
_BINARY = "\x00binary"


@dataclass(frozen=True)
class WsOptions:
    max_message_chars: int  # longest user message (a longer send is a bad frame)
    max_frame_bytes: int  # larger frames close the connection with 1009
    max_bad_frames: int  # bad frames tolerated before close 4400
    rate_per_s: float  # client frames per second …
    rate_burst: int  # … with this burst, before close 4429


class CloseConnection(Exception):
    """End the connection with ``code``; ``reason`` goes in the close frame, after ``final_frame``
    (a frame that says more than a close reason can, e.g. the ``error`` of an expired token)."""

    def __init__(self, code: Close, reason: str, *, final_frame: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.final_frame = final_frame

    def __repr__(self) -> str:
        return f"CloseConnection({int(self.code)}, {self.reason!r})"


class TokenBucket:
    """Frames per second with a burst allowance; ``take()`` is False when the client floods."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens = float(burst)
        self._clock = clock
        self.at = clock()

    def take(self) -> bool:
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class WsProtocol:
    """One connection's state: before hello, then open for ``conversation_id``."""

    def __init__(self, options: WsOptions, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self.bucket = TokenBucket(options.rate_per_s, options.rate_burst, clock)
        self.bad_frames = 0
        self.conversation_id: str | None = None

    @property
    def open(self) -> bool:
        return self.conversation_id is not None

    def accept_hello(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id

    def receive(self, text: str | None, data: bytes | None) -> ClientFrame | RequestErrorFrame | None:
        """Judge one client message: the frame to act on, an error frame to send back, or ``None``
        (nothing to do: a ``pong``). Raises :class:`CloseConnection`."""
        if not self.bucket.take():
            raise CloseConnection(Close.FLOOD, "too many frames")
        limit = self.options.max_frame_bytes
        if text is None:
            if len(data or b"") > limit:
                raise CloseConnection(Close.PAYLOAD_TOO_LARGE, "frame too large")
            text = _BINARY
        elif len(text) > limit or len(text.encode()) > limit:
            raise CloseConnection(Close.PAYLOAD_TOO_LARGE, "frame too large")
        try:
            frame = parse_client_frame(text, max_text_chars=self.options.max_message_chars)
        except BadFrame as exc:
            return self.bad_frame(exc.message, client_message_id=exc.client_message_id)
        if not self.open and not isinstance(frame, HelloFrame):
            return self.bad_frame("the first frame must be hello")
        if self.open and isinstance(frame, HelloFrame):
            return self.bad_frame("hello was already accepted on this connection")
        if isinstance(frame, PongFrame):
            return None  # the client answering our ping
        return frame

    def bad_frame(self, message: str, *, client_message_id: str | None = None) -> RequestErrorFrame:
        """Count a bad frame; the error frame to answer it with. Raises :class:`CloseConnection`
        once the client used up its budget."""
        self.bad_frames += 1
        if self.bad_frames > self.options.max_bad_frames:
            raise CloseConnection(Close.BAD_FRAMES, "too many bad frames")
        return RequestErrorFrame(code="bad_request", message=message, client_message_id=client_message_id)


def check_stream_owner(info: StreamInfo | None, stream_id: str, conversation_id: str) -> None:
    """A connection may follow or cancel only its own conversation's streams."""
    if info is None:
        raise StreamExpired(f"stream {stream_id} is not in the buffer (expired or unknown)", stream_id=stream_id)
    if info.conversation_id != conversation_id:
        raise Forbidden("this stream belongs to another conversation", stream_id=stream_id)
