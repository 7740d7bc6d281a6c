"""Server-Sent Events transport (docs/protocol.md §5): the response that follows one stream.

Per response, one race (like sse-starlette)::

    ┌ pump ──────── follow the log → "id/event/data" frames; ": ping" after heartbeat_ms of silence
    ├ listen ────── http.disconnect from the client
    └ shutdown ──── the instance is going away: end the response, EventSource reconnects elsewhere
    whichever ends first cancels the others

Every write has a deadline (``SEND_TIMEOUT_S``): a client that stops reading is dropped (it can
resume with ``Last-Event-ID``) instead of the server holding its data.
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
        try:
            await race(self._pump(send), self._listen(receive), self._shutdown())
        except TimeoutError:
            self.outcome = "slow_consumer"
            logger.bind(stream_id=self._stream_id, transport="sse").info("sse client stopped reading; dropped")
        except OSError:
            self.outcome = "disconnected"
        finally:
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
        async with asyncio.timeout(self._send_timeout_s):
            await send({"type": "http.response.body", "body": body, "more_body": True})

    async def _pump(self, send: Send) -> None:
        # Tell EventSource to come back quickly after a cut.
        await self._write(send, RETRY_FRAME)
        iterator = self._events
        next_event: asyncio.Future[StoredEvent] | None = None
        try:
            while True:
                if next_event is None:
                    next_event = asyncio.ensure_future(anext(iterator))
                done, _ = await asyncio.wait({next_event}, timeout=self._heartbeat_s)
                if not done:
                    await self._write(send, b": ping\n\n")
                    continue
                try:
                    event = next_event.result()
                except StopAsyncIteration:
                    self.outcome = "ended"
                    return
                except StreamExpired as exc:
                    error = sse_error_frame(self._stream_id, exc.code, exc.message)
                    await self._write(send, EXPIRED_RETRY_FRAME + error)
                    self.outcome = "expired"
                    return
                except BufferUnavailable as exc:
                    # Retryable: EventSource comes back after RECONNECT_AFTER_MS and resumes.
                    error = sse_error_frame(self._stream_id, exc.code, exc.message, retryable=True)
                    await self._write(send, error)
                    self.outcome = "expired"
                    return
                except AlreadyEnded:
                    # Raced with the end (the request was checked before): the reconnect gets a 204.
                    self.outcome = "ended"
                    return
                next_event = None
                await self._write(send, sse_frame(event))
                if event.terminal:
                    self.outcome = "ended"
                    return
        finally:
            if next_event is not None and not next_event.done():
                next_event.cancel()
                await asyncio.gather(next_event, return_exceptions=True)

    async def _listen(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.outcome = "disconnected"
                return

    async def _shutdown(self) -> None:
        await self._shutting_down.wait()
        self.outcome = "shutdown"
