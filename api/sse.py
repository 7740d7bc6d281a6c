"""Server-Sent Events transport (docs/protocol.md §5): the response that follows one stream.

Per response, one race (like sse-starlette)::

    ┌ pump ──────── follow the log → "id/event/data" frames
    ├ heartbeat ─── ": ping" after heartbeat_ms without a write
    ├ listen ────── http.disconnect from the client
    └ shutdown ──── the instance is going away: end the response, EventSource reconnects elsewhere
    whichever ends first cancels the others

Every write has a deadline (``SEND_TIMEOUT_S``): a client that stops reading is dropped (it can
resume with ``Last-Event-ID``) instead of the server holding its data.

Per event the pump only awaits the next event and writes it: no task, future or timer per event
(STYLE.md, "The hot path"). The write deadline is one timer per response, armed by the first write
and pushed back when it fires while the writes keep finishing (a write that is still in flight past
its deadline cancels the writer, which reports ``TimeoutError``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from loguru import logger
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from api.frames import RequestErrorFrame
from streaming.events import StoredEvent
from streaming.exceptions import BufferUnavailable, StreamExpired
from streaming.follow import AlreadyEnded
from streaming.tasks import race

# EventSource reconnects this long after a cut (its default is browser-chosen, often 3 s).
RECONNECT_AFTER_MS = 1000
RETRY_FRAME = f"retry: {RECONNECT_AFTER_MS}\n\n".encode()
# Sent before the error of an expired or unknown stream: a standard EventSource that does not read
# our `event: error` would otherwise reconnect every RECONNECT_AFTER_MS for as long as the tab is
# open; with this it waits a day (PROTOCOL §9: an expired stream never makes it loop).
EXPIRED_RETRY_FRAME = b"retry: 86400000\n\n"

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    "Connection": "keep-alive",
}


def sse_frame(event: StoredEvent) -> bytes:
    return f"id: {event.seq}\nevent: {event.type}\ndata: {event.data}\n\n".encode()


def sse_error_frame(stream_id: str, code: str, message: str, *, retryable: bool = False) -> bytes:
    """An ``error`` without an ``id`` (no ``seq``): the stream cannot be followed (docs/protocol.md §5)."""
    frame = RequestErrorFrame(code=code, message=message, stream_id=stream_id, retryable=retryable)
    return f"event: error\ndata: {frame.encode()}\n\n".encode()


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncIterator[StoredEvent],
        *,
        stream_id: str,
        heartbeat_s: float,
        send_timeout_s: float,
        shutting_down: asyncio.Event,
        on_close: Any = None,
    ) -> None:
        # Like StreamingResponse: no body attribute, so no Content-Length header.
        self.status_code = 200
        self.background = None
        self.init_headers(SSE_HEADERS)
        self._events = events
        self._stream_id = stream_id
        self._heartbeat_s = heartbeat_s
        self._send_timeout_s = send_timeout_s
        self._shutting_down = shutting_down
        self._on_close = on_close
        self.outcome = "open"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._send_lock = asyncio.Lock()  # the pump and the heartbeat share the response
        self._last_write = loop.time()
        self._write_started: float | None = None
        self._writer: asyncio.Task[Any] | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._timed_out = False
        try:
            await race(self._pump(send), self._heartbeat(send), self._listen(receive), self._shutdown())
        except TimeoutError:
            self.outcome = "slow_consumer"
            logger.bind(stream_id=self._stream_id, transport="sse").info("sse client stopped reading; dropped")
        except OSError:
            self.outcome = "disconnected"
        finally:
            if self._deadline_timer is not None:
                self._deadline_timer.cancel()
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                await aclose()
            if self._on_close is not None:
                self._on_close(self.outcome)
        if self.outcome in {"ended", "shutdown", "expired"}:
            try:
                async with asyncio.timeout(self._send_timeout_s):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
            except (TimeoutError, OSError):
                pass

    async def _write(self, send: Send, body: bytes) -> None:
        """Write under the response's write deadline; raises ``TimeoutError`` when it passes."""
        async with self._send_lock:
            self._write_started = self._loop.time()
            self._writer = asyncio.current_task()
            if self._deadline_timer is None:
                self._deadline_timer = self._loop.call_at(
                    self._write_started + self._send_timeout_s, self._on_write_deadline
                )
            try:
                await send({"type": "http.response.body", "body": body, "more_body": True})
            except asyncio.CancelledError:
                if self._timed_out and self._writer is not None and self._writer.uncancel() == 0:
                    raise TimeoutError from None
                raise
            finally:
                self._write_started = None
                self._last_write = self._loop.time()

    def _on_write_deadline(self) -> None:
        self._deadline_timer = None
        started = self._write_started
        if started is None:
            return  # no write in flight: the next write arms the timer again
        due = started + self._send_timeout_s
        if self._loop.time() >= due:
            self._timed_out = True
            if self._writer is not None:
                self._writer.cancel()
        else:
            self._deadline_timer = self._loop.call_at(due, self._on_write_deadline)

    async def _heartbeat(self, send: Send) -> None:
        while True:
            quiet_for = self._loop.time() - self._last_write
            if quiet_for < self._heartbeat_s or self._write_started is not None:
                await asyncio.sleep(
                    self._heartbeat_s - quiet_for if quiet_for < self._heartbeat_s else self._heartbeat_s
                )
                continue
            await self._write(send, b": ping\n\n")

    async def _pump(self, send: Send) -> None:
        # Tell EventSource to come back quickly after a cut.
        await self._write(send, RETRY_FRAME)
        try:
            async for event in self._events:
                await self._write(send, sse_frame(event))
                if event.terminal:
                    self.outcome = "ended"
                    return
        except StreamExpired as exc:
            await self._write(send, EXPIRED_RETRY_FRAME + sse_error_frame(self._stream_id, exc.code, exc.message))
            self.outcome = "expired"
            return
        except BufferUnavailable as exc:
            # Retryable: EventSource comes back after RECONNECT_AFTER_MS and resumes.
            await self._write(send, sse_error_frame(self._stream_id, exc.code, exc.message, retryable=True))
            self.outcome = "expired"
            return
        except AlreadyEnded:
            # Raced with the end (the request was checked before): the reconnect gets a 204.
            self.outcome = "ended"
            return
        self.outcome = "ended"

    async def _listen(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.outcome = "disconnected"
                return

    async def _shutdown(self) -> None:
        await self._shutting_down.wait()
        self.outcome = "shutdown"
