"""WebSocket transport (docs/protocol.md §4): the adapter that moves frames between the socket and the core.

The protocol's rules (hello first, bad-frame budget, flood bucket, frame size, ownership) are in
``api/ws_state.py``, tested without sockets; this module only reads, writes and dispatches.
One connection is one task group that races three tasks::

    ┌ receiver ──── client frames → WsProtocol → send / resume / cancel / ping (bad frames answered)
    ├ sender ────── outbox → socket; {"type":"ping"} after heartbeat_ms of silence; write deadline
    └ watcher ───── waits for a reason to close: a close requested by the others (slow consumer,
                    flood, too many bad frames), the instance going away (close 1012: clients resume
                    elsewhere), the token expiring (an ``unauthorized`` error frame, close 4401: the
                    client negotiates again and resumes), or, checked once per heartbeat, the
                    conversation revoked (``unauthorized``, close 4401)
    + one forwarder task per stream the client follows: log → outbox
    whichever of the three ends first cancels the rest, and the forwarders.

The outbox is bounded (``OUTBOX_MAX_FRAMES``): when a forwarder cannot put an event in it, the
client is not reading; it is closed with 1013 and resumes from its last ``seq``.

An idle connection costs what it holds, so it holds little (docs/performance.md, "Idle memory"):
one watcher for four reasons to close instead of a task each, an outbox whose queue exists only
once a frame was queued, and no timer or task created per frame on the send path (the heartbeat
wait and the write deadline are one re-armed timer each, the idle-timer trick of
``streaming/fanout.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING

from loguru import logger
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from api.auth import Grant
from api.exceptions import RateLimited
from api.frames import (
    PING,
    Accepted,
    CancelFrame,
    ClientFrame,
    Ended,
    HelloFrame,
    PingFrame,
    Pong,
    RequestErrorFrame,
    ResumeFrame,
    SendFrame,
    Welcome,
)
from api.revocations import REVOKED_MESSAGE
from api.ws_state import CloseConnection, WsProtocol, check_stream_owner
from reply.exceptions import ShuttingDown
from streaming.codes import Close, WireError, error_code
from streaming.contract import StreamInfo
from streaming.exceptions import StreamError
from streaming.follow import AlreadyEnded
from streaming.tasks import Doorbell, MovingDeadline, race

if TYPE_CHECKING:
    from api.runtime import Runtime

# Longest close reason we copy from an error message (a close frame's reason is ≤ 123 bytes).
CLOSE_REASON_CHARS = 120


class Outbox(Doorbell):
    """A connection's bounded queue of encoded frames, forwarders → sender (one consumer).

    Overflow policy: :meth:`put_nowait` returns ``False`` when ``maxsize`` frames wait; the
    connection is then closed as a slow consumer. Leaner than ``asyncio.Queue`` (three deques and an
    event per queue, ~3 KB): the deque is created with the first frame, and :meth:`get` waits on the
    outbox's :class:`~streaming.tasks.Doorbell` (one future per wait, one lazily armed timer per outbox),
    so a busy connection creates no timer per frame."""

    __slots__ = ("_frames", "_maxsize")

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self._maxsize = maxsize
        self._frames: deque[str] | None = None

    def __len__(self) -> int:
        return len(self._frames) if self._frames is not None else 0

    def put_nowait(self, frame: str) -> bool:
        frames = self._frames
        if frames is None:
            frames = self._frames = deque()
        elif len(frames) >= self._maxsize:
            return False
        frames.append(frame)
        self.ring()
        return True

    async def get(self, wait_s: float) -> str | None:
        """The next frame, or ``None`` when none came for ``wait_s`` seconds. Cancelling is safe:
        no frame is taken unless returned."""
        if self._frames:
            return self._frames.popleft()
        await self.wait(wait_s)
        return self._frames.popleft() if self._frames else None


class WsConnection:
    def __init__(self, websocket: WebSocket, runtime: Runtime, address: str) -> None:
        self.ws = websocket
        self.rt = runtime
        self.address = address
        self.settings = runtime.settings
        self.protocol = WsProtocol(runtime.ws_options)
        self.outbox = Outbox(self.settings.outbox_max_frames)
        self.forwarders: dict[str, asyncio.Task[None]] = {}
        self.close_reason: asyncio.Future[CloseConnection] = asyncio.get_running_loop().create_future()
        # The watcher's current wait, so that a close requested elsewhere ends it at once.
        self._watch_deadline: asyncio.Timeout | None = None
        self.grant: Grant | None = None
        self.log = logger.bind(transport="websocket", instance=self.settings.instance_id)

    async def run(self) -> None:
        await self.ws.accept()
        self.log.info("connect")
        close = CloseConnection(Close.NORMAL, "")
        try:
            self.grant = await self._hello()
            try:
                self.rt.check_origin(self.rt.brand(self.grant.brand), self.ws.headers.get("origin"))
            except WireError:
                raise CloseConnection(Close.FORBIDDEN, "origin not allowed for this brand") from None
            self.protocol.accept_hello(self.grant.conversation_id)
            self.log = self.log.bind(conversation_id=self.grant.conversation_id)
            self.log.info("hello accepted")
            self.rt.hooks.emit(
                "connection_opened",
                transport="websocket",
                conversation_id=self.grant.conversation_id,
                brand=self.grant.brand,
            )
            welcome = Welcome(conversation_id=self.grant.conversation_id, heartbeat_ms=self.settings.heartbeat_ms)
            await self.ws.send_text(welcome.encode())
            await race(self._receiver(), self._sender(), self._watcher())
            if self.close_reason.done():
                close = self.close_reason.result()
        except CloseConnection as exc:
            close = exc
        except WebSocketDisconnect:
            close = CloseConnection(Close.NORMAL, "client went away")
        finally:
            self.outbox.close()
            for task in self.forwarders.values():
                task.cancel()
            await asyncio.gather(*self.forwarders.values(), return_exceptions=True)
        self.log.info("disconnect: {} {}", int(close.code), close.reason)
        if close.code == Close.SLOW_CONSUMER:
            self.rt.hooks.emit("slow_consumer", transport="websocket", conversation_id=self._conversation_id)
        if self.grant is not None:
            self.rt.hooks.emit(
                "connection_closed",
                transport="websocket",
                conversation_id=self.grant.conversation_id,
                brand=self.grant.brand,
                code=int(close.code),
                reason=close.reason,
            )
        if self.ws.application_state == WebSocketState.CONNECTED and self.ws.client_state == WebSocketState.CONNECTED:
            # A client that stopped reading cannot take a close frame either: give up after the
            # write deadline; returning makes uvicorn close the transport.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.settings.send_timeout_s):
                    if close.final_frame is not None:
                        await self.ws.send_text(close.final_frame)
                    await self.ws.close(int(close.code), close.reason)

    # --- phases ---------------------------------------------------------------------------------
    async def _hello(self) -> Grant:
        try:
            async with asyncio.timeout(self.settings.hello_timeout_s):
                while True:
                    judged = self.protocol.receive(*await self._receive())
                    if isinstance(judged, RequestErrorFrame):
                        await self.ws.send_text(judged.encode())
                    elif isinstance(judged, HelloFrame):
                        try:
                            return await self.rt.authorize(judged.token)
                        except WireError as exc:
                            raise CloseConnection(Close.UNAUTHORIZED, exc.message[:CLOSE_REASON_CHARS]) from None
        except TimeoutError:
            raise CloseConnection(Close.HELLO_TIMEOUT, "no valid hello in time") from None

    async def _receive(self) -> tuple[str | None, bytes | None]:
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", Close.NORMAL))
        return message.get("text"), message.get("bytes")

    @property
    def _conversation_id(self) -> str | None:
        return self.grant.conversation_id if self.grant else None

    def _enqueue(self, frame: str) -> None:
        if not self.outbox.put_nowait(frame):
            self._request_close(CloseConnection(Close.SLOW_CONSUMER, "slow consumer: resume from your last seq"))
            raise CloseConnection(Close.SLOW_CONSUMER, "slow consumer")

    def _request_close(self, close: CloseConnection) -> None:
        if not self.close_reason.done():
            self.close_reason.set_result(close)
            wait = self._watch_deadline
            if wait is not None and not wait.expired():  # wake the watcher now: it ends the connection
                wait.reschedule(asyncio.get_running_loop().time())

    async def _receiver(self) -> None:
        while True:
            frame: ClientFrame | None = None
            try:
                judged = self.protocol.receive(*await self._receive())
                if isinstance(judged, RequestErrorFrame):
                    self._enqueue(judged.encode())
                    continue
                frame = judged
                if frame is not None:
                    await self._handle(frame)
            except CloseConnection as close:
                self._request_close(close)
                return
            except WebSocketDisconnect:
                return
            except ShuttingDown as exc:
                self._enqueue(self._refusal(exc, frame).encode())
                self._request_close(CloseConnection(Close.SHUTTING_DOWN, "server shutting down"))
                return
            except WireError as exc:
                try:
                    self._enqueue(self._refusal(exc, frame).encode())
                except CloseConnection as close:
                    self._request_close(close)
                    return

    @staticmethod
    def _refusal(exc: WireError, frame: ClientFrame | None) -> RequestErrorFrame:
        return RequestErrorFrame(
            code=exc.code,
            message=exc.message,
            stream_id=exc.stream_id,
            client_message_id=frame.client_message_id if isinstance(frame, SendFrame) else None,
            retryable=True if error_code(exc.code).retryable else None,
            retry_after_ms=exc.retry_after_ms if isinstance(exc, RateLimited) else None,
        )

    async def _handle(self, frame: ClientFrame) -> None:
        assert self.grant is not None
        if isinstance(frame, PingFrame):
            self._enqueue(Pong().encode())
        elif isinstance(frame, SendFrame):
            brand = self.rt.brand(self.grant.brand)
            submission = await self.rt.start_reply(
                address=self.address,
                conversation_id=self.grant.conversation_id,
                brand=brand,
                client_message_id=frame.client_message_id,
                text=frame.text,
                locale=self.grant.locale,
            )
            self.log.bind(stream_id=submission.stream_id).info("send accepted (new={})", submission.created)
            self._enqueue(Accepted(client_message_id=frame.client_message_id, stream_id=submission.stream_id).encode())
            self._forward(submission.stream_id, 0)
        elif isinstance(frame, ResumeFrame):
            info = await self._check_stream(frame.stream_id)
            self.log.bind(stream_id=frame.stream_id).info("resume after seq {}", frame.after_seq)
            if info.last_seq is not None and info.ended_by(frame.after_seq):
                self._enqueue(Ended(stream_id=frame.stream_id, last_seq=info.last_seq).encode())
            else:
                self._forward(frame.stream_id, frame.after_seq)
        elif isinstance(frame, CancelFrame):
            await self._check_stream(frame.stream_id)
            await self.rt.manager.cancel(frame.stream_id)

    async def _check_stream(self, stream_id: str) -> StreamInfo:
        assert self.grant is not None
        info = await self.rt.buffer.stream_info(stream_id)
        check_stream_owner(info, stream_id, self.grant.conversation_id)
        assert info is not None
        return info

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
        except StreamError as exc:  # expired, or the buffer unavailable past its deadline (retryable)
            retryable = error_code(exc.code).retryable
            frame = RequestErrorFrame(code=exc.code, message=exc.message, stream_id=stream_id, retryable=retryable)
            self._enqueue(frame.encode())
        except AlreadyEnded as ended:
            self._enqueue(Ended(stream_id=stream_id, last_seq=ended.last_seq).encode())
        except CloseConnection:
            pass  # slow consumer: close already requested

    async def _sender(self) -> None:
        heartbeat_s = self.rt.heartbeat_s
        send_timeout_s = self.settings.send_timeout_s
        loop = asyncio.get_running_loop()
        try:
            # One write deadline for the whole loop, moved before each write (a float store), not an
            # asyncio.timeout per frame. While waiting for frames it stays beyond the wait plus the
            # ping written after it, so it never fires then.
            async with MovingDeadline() as deadline:
                while True:
                    deadline.move_to(loop.time() + heartbeat_s + send_timeout_s)
                    frame = await self.outbox.get(heartbeat_s)
                    deadline.move_to(loop.time() + send_timeout_s)
                    try:
                        await self.ws.send_text(PING if frame is None else frame)
                    except (WebSocketDisconnect, RuntimeError, OSError):
                        return
        except TimeoutError:
            self.log.warning("heartbeat/write timeout: the client stopped reading for {} s", send_timeout_s)
            self._request_close(CloseConnection(Close.SLOW_CONSUMER, "slow consumer: resume from your last seq"))

    async def _watcher(self) -> None:
        """Ends when the connection should close; the reason is in ``close_reason``.

        One task for four reasons (a task each cost ~1.5 KB per idle connection): a close requested
        by the receiver, the sender or a forwarder (:meth:`_request_close` wakes this wait), the
        instance shutting down, the token expiring (a connection lives no longer than the token it
        was opened with: the client negotiates again and resumes), and the conversation revoked,
        looked up once per heartbeat per connection, never per event (api/revocations.py; the hello
        was checked already)."""
        assert self.grant is not None
        loop = asyncio.get_running_loop()
        expires_at = loop.time() + max(0.0, self.grant.expires_at - time.time())
        next_check = loop.time() + self.rt.heartbeat_s
        while not self.close_reason.done():
            try:
                async with asyncio.timeout_at(min(expires_at, next_check)) as wait:
                    self._watch_deadline = wait
                    await self.rt.shutting_down.wait()
            except TimeoutError:
                pass  # a deadline, or woken by _request_close
            finally:
                self._watch_deadline = None
            if self.close_reason.done():
                return
            if self.rt.shutting_down.is_set():
                self._request_close(CloseConnection(Close.SHUTTING_DOWN, "server restarting: reconnect and resume"))
                return
            now = loop.time()
            if now >= expires_at:
                expired = RequestErrorFrame(code="unauthorized", message="the token has expired; negotiate again")
                self._request_close(
                    CloseConnection(Close.UNAUTHORIZED, "token expired: negotiate again", final_frame=expired.encode())
                )
                return
            if now >= next_check:
                if await self.rt.revocations.is_revoked(self.grant.brand, self.grant.conversation_id):
                    revoked = RequestErrorFrame(code="unauthorized", message=REVOKED_MESSAGE)
                    self._request_close(
                        CloseConnection(Close.UNAUTHORIZED, "conversation revoked", final_frame=revoked.encode())
                    )
                    return
                next_check = loop.time() + self.rt.heartbeat_s


async def websocket_endpoint(websocket: WebSocket) -> None:
    runtime: Runtime = websocket.app.state.runtime
    allowed = runtime.settings.allowed_origins
    origin = websocket.headers.get("origin")
    if origin and "*" not in allowed and origin not in allowed:
        await websocket.close(Close.FORBIDDEN, "origin not allowed")
        return
    if runtime.shutting_down.is_set():
        await websocket.close(Close.SHUTTING_DOWN, "server restarting")
        return
    address = runtime.limits.address(websocket.client.host if websocket.client else None, websocket.headers)
    try:
        place = await runtime.limits.open_connection(address)
    except RateLimited:
        # Accepted only to say why: 4429 makes the client back off instead of retrying at once.
        await websocket.accept()
        await websocket.close(Close.FLOOD, "too many connections from your address")
        return
    runtime.connections += 1
    try:
        await WsConnection(websocket, runtime, address).run()
    finally:
        runtime.connections -= 1
        await runtime.limits.close_connection(address, place)
