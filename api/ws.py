"""WebSocket transport (PROTOCOL.md §4): frames in, calls on the core, events out.

One connection is one race::

    ┌ receiver ──── client frames → send / resume / cancel / ping (bad frames answered, counted)
    ├ sender ────── outbox → socket; {"type":"ping"} after heartbeat_ms of silence; write deadline
    ├ closer ────── waits for a reason to close (slow consumer, flood, too many bad frames)
    └ shutdown ──── the instance is going away → close 1012 (clients resume elsewhere)
    + one forwarder task per stream the client follows: log → outbox
    whichever of the four ends first cancels the rest, and the forwarders.

The outbox is bounded (``OUTBOX_MAX_FRAMES``): when a forwarder cannot put an event in it, the
client is not reading; it is closed with 1013 and resumes from its last ``seq``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from loguru import logger
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from api.auth import Grant, verify_token
from streaming.events import (
    BadFrame,
    CancelFrame,
    HelloFrame,
    PingFrame,
    ResumeFrame,
    SendFrame,
    parse_client_frame,
    server_frame,
)
from streaming.exceptions import (
    CLOSE_BAD_FRAMES,
    CLOSE_FLOOD,
    CLOSE_HELLO_TIMEOUT,
    CLOSE_SHUTDOWN,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOO_LARGE,
    CLOSE_UNAUTHORIZED,
    ChatError,
    Forbidden,
    ShuttingDown,
    StreamExpired,
)
from streaming.tasks import race

if TYPE_CHECKING:
    from api.runtime import Runtime


class _Close(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class TokenBucket:
    """Frames per second with a burst allowance; ``take()`` is False when the client floods."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class WsConnection:
    def __init__(self, websocket: WebSocket, runtime: Runtime) -> None:
        self.ws = websocket
        self.rt = runtime
        self.settings = runtime.settings
        self.outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=self.settings.outbox_max_frames)
        self.forwarders: dict[str, asyncio.Task[None]] = {}
        self.close_reason: asyncio.Future[_Close] = asyncio.get_running_loop().create_future()
        self.grant: Grant | None = None
        self.bad_frames = 0
        self.bucket = TokenBucket(self.settings.ws_rate_per_s, self.settings.ws_rate_burst)
        self.log = logger.bind(transport="websocket", instance=self.settings.instance_id)

    async def run(self) -> None:
        await self.ws.accept()
        self.log.info("connect")
        close = _Close(1000, "")
        try:
            self.grant = await self._hello()
            origin = self.ws.headers.get("origin")
            if origin and not self.rt.brand(self.grant.brand).origin_allowed(origin):
                raise _Close(4403, "origin not allowed for this brand")
            self.log = self.log.bind(conversation_id=self.grant.conversation_id)
            self.log.info("hello accepted")
            self.rt.hooks.emit(
                "connection_opened",
                transport="websocket",
                conversation_id=self.grant.conversation_id,
                brand=self.grant.brand,
            )
            await self.ws.send_text(
                server_frame(
                    "welcome", conversation_id=self.grant.conversation_id, heartbeat_ms=self.settings.heartbeat_ms
                )
            )
            await race(self._receiver(), self._sender(), self._closer(), self._shutdown())
            if self.close_reason.done():
                close = self.close_reason.result()
        except _Close as exc:
            close = exc
        except WebSocketDisconnect:
            close = _Close(1000, "client went away")
        finally:
            for task in self.forwarders.values():
                task.cancel()
            await asyncio.gather(*self.forwarders.values(), return_exceptions=True)
        self.log.info("disconnect: {} {}", close.code, close.reason)
        if close.code == CLOSE_SLOW_CONSUMER:
            self.rt.hooks.emit("slow_consumer", transport="websocket", conversation_id=self._conversation_id)
        if self.grant is not None:
            self.rt.hooks.emit(
                "connection_closed",
                transport="websocket",
                conversation_id=self.grant.conversation_id,
                brand=self.grant.brand,
                code=close.code,
                reason=close.reason,
            )
        if self.ws.application_state == WebSocketState.CONNECTED and self.ws.client_state == WebSocketState.CONNECTED:
            # A client that stopped reading cannot take a close frame either: give up after the
            # write deadline; returning makes uvicorn close the transport.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.settings.send_timeout_s):
                    await self.ws.close(close.code, close.reason)

    # --- phases ---------------------------------------------------------------------------------
    async def _hello(self) -> Grant:
        try:
            async with asyncio.timeout(self.settings.hello_timeout_s):
                while True:
                    raw = await self._receive_text()
                    try:
                        frame = parse_client_frame(raw, max_text_chars=self.settings.max_message_chars)
                    except BadFrame as exc:
                        await self._bad_frame(exc.message, direct=True)
                        continue
                    if not isinstance(frame, HelloFrame):
                        await self._bad_frame("the first frame must be hello", direct=True)
                        continue
                    try:
                        return verify_token(self.settings.secret_bytes, frame.token)
                    except ChatError as exc:
                        raise _Close(CLOSE_UNAUTHORIZED, exc.message[:120]) from None
        except TimeoutError:
            raise _Close(CLOSE_HELLO_TIMEOUT, "no valid hello in time") from None

    async def _receive_text(self) -> str:
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        if not self.bucket.take():
            raise _Close(CLOSE_FLOOD, "too many frames")
        text = message.get("text")
        if text is None:
            data = message.get("bytes") or b""
            if len(data) > self.settings.max_frame_bytes:
                raise _Close(CLOSE_TOO_LARGE, "frame too large")
            return "\x00binary"  # fails JSON parsing: answered as a bad frame
        assert isinstance(text, str)
        if len(text) > self.settings.max_frame_bytes or len(text.encode()) > self.settings.max_frame_bytes:
            raise _Close(CLOSE_TOO_LARGE, "frame too large")
        return text

    async def _bad_frame(self, message: str, *, direct: bool = False) -> None:
        self.bad_frames += 1
        if self.bad_frames > self.settings.ws_max_bad_frames:
            raise _Close(CLOSE_BAD_FRAMES, "too many bad frames")
        frame = server_frame("error", code="bad_request", message=message)
        if direct:
            await self.ws.send_text(frame)
        else:
            self._enqueue(frame)

    @property
    def _conversation_id(self) -> str | None:
        return self.grant.conversation_id if self.grant else None

    def _enqueue(self, frame: str) -> None:
        try:
            self.outbox.put_nowait(frame)
        except asyncio.QueueFull:
            self._request_close(_Close(CLOSE_SLOW_CONSUMER, "slow consumer: resume from your last seq"))
            raise _Close(CLOSE_SLOW_CONSUMER, "slow consumer") from None

    def _request_close(self, close: _Close) -> None:
        if not self.close_reason.done():
            self.close_reason.set_result(close)

    async def _receiver(self) -> None:
        while True:
            try:
                raw = await self._receive_text()
            except _Close as exc:
                self._request_close(exc)
                return
            except WebSocketDisconnect:
                return
            try:
                frame = parse_client_frame(raw, max_text_chars=self.settings.max_message_chars)
                await self._handle(frame)
            except BadFrame as exc:
                try:
                    await self._bad_frame(exc.message)
                except _Close as close:
                    self._request_close(close)
                    return
            except ShuttingDown as exc:
                self._enqueue(server_frame("error", code=exc.code, message=exc.message))
                self._request_close(_Close(CLOSE_SHUTDOWN, "server shutting down"))
                return
            except ChatError as exc:
                self._enqueue(server_frame("error", code=exc.code, message=exc.message, **_sid(exc.stream_id)))
            except _Close as close:
                self._request_close(close)
                return

    async def _handle(self, frame: Any) -> None:
        assert self.grant is not None
        if isinstance(frame, PingFrame):
            self._enqueue(server_frame("pong"))
        elif isinstance(frame, SendFrame):
            brand = self.rt.brand(self.grant.brand)
            submission = await self.rt.manager.submit(
                conversation_id=self.grant.conversation_id,
                brand=brand,
                client_message_id=frame.client_message_id,
                text=frame.text,
            )
            self.log.bind(stream_id=submission.stream_id).info("send accepted (new={})", submission.created)
            self._enqueue(
                server_frame("accepted", client_message_id=frame.client_message_id, stream_id=submission.stream_id)
            )
            self._forward(submission.stream_id, 0)
        elif isinstance(frame, ResumeFrame):
            await self._check_stream(frame.stream_id)
            self.log.bind(stream_id=frame.stream_id).info("resume after seq {}", frame.after_seq)
            self._forward(frame.stream_id, frame.after_seq)
        elif isinstance(frame, CancelFrame):
            await self._check_stream(frame.stream_id)
            await self.rt.manager.cancel(frame.stream_id)
        elif isinstance(frame, HelloFrame):
            raise BadFrame("hello was already accepted on this connection")
        # PongFrame: the client answering our ping; nothing to do.

    async def _check_stream(self, stream_id: str) -> None:
        assert self.grant is not None
        info = await self.rt.buffer.stream_info(stream_id)
        if info is None:
            raise StreamExpired(f"stream {stream_id} is not in the buffer (expired or unknown)", stream_id=stream_id)
        if info.conversation_id != self.grant.conversation_id:
            raise Forbidden("this stream belongs to another conversation", stream_id=stream_id)

    def _forward(self, stream_id: str, after_seq: int) -> None:
        old = self.forwarders.pop(stream_id, None)
        if old is not None:
            old.cancel()
        task = asyncio.create_task(self._forwarder(stream_id, after_seq), name=f"fwd-{stream_id}")
        self.forwarders[stream_id] = task
        task.add_done_callback(
            lambda t: self.forwarders.pop(stream_id, None) if self.forwarders.get(stream_id) is t else None
        )

    async def _forwarder(self, stream_id: str, after_seq: int) -> None:
        try:
            async for event in self.rt.follow(stream_id, after_seq, transport="websocket"):
                self._enqueue(event.data)
        except StreamExpired as exc:
            self._enqueue(
                server_frame("error", code=exc.code, message=exc.message, stream_id=stream_id, retryable=False)
            )
        except _Close:
            pass  # slow consumer: close already requested

    async def _sender(self) -> None:
        heartbeat_s = self.rt.heartbeat_s
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # races with the queue handing over an item, and this task would never end.
            try:
                async with asyncio.timeout(heartbeat_s):
                    frame = await self.outbox.get()
            except TimeoutError:
                frame = server_frame("ping")
            try:
                async with asyncio.timeout(self.settings.send_timeout_s):
                    await self.ws.send_text(frame)
            except TimeoutError:
                self.log.warning(
                    "heartbeat/write timeout: the client stopped reading for {} s", self.settings.send_timeout_s
                )
                self._request_close(_Close(CLOSE_SLOW_CONSUMER, "slow consumer: resume from your last seq"))
                return
            except (WebSocketDisconnect, RuntimeError, OSError):
                return

    async def _closer(self) -> None:
        # shield: cancelling this task must not cancel the future that records why we close.
        await asyncio.shield(self.close_reason)

    async def _shutdown(self) -> None:
        await self.rt.shutting_down.wait()
        self._request_close(_Close(CLOSE_SHUTDOWN, "server restarting: reconnect and resume"))


def _sid(stream_id: str | None) -> dict[str, str]:
    return {"stream_id": stream_id} if stream_id else {}


async def websocket_endpoint(websocket: WebSocket) -> None:
    runtime: Runtime = websocket.app.state.runtime
    allowed = runtime.settings.allowed_origins
    origin = websocket.headers.get("origin")
    if origin and "*" not in allowed and origin not in allowed:
        await websocket.close(4403, "origin not allowed")
        return
    if runtime.shutting_down.is_set():
        await websocket.close(CLOSE_SHUTDOWN, "server restarting")
        return
    runtime.connections += 1
    try:
        await WsConnection(websocket, runtime).run()
    finally:
        runtime.connections -= 1
