"""A request body limit and deadline, enforced while the body is read, before anything parses it.

A ``Content-Length`` over the limit is answered at once, without reading a byte of the body. A
body without one (chunked) is counted as it arrives; the message that crosses the limit is not
handed on: the app sees the client go away, whatever it answers is dropped, and the client gets
``413 payload_too_large`` in the project's error body. Memory per request is bounded by the limit
plus one chunk. Each piece of the body must arrive within ``HTTP_BODY_TIMEOUT_S`` of the previous
one (a client trickling its body would hold the request forever), else ``400 bad_request``.
Once the body is complete, ``receive()`` is not timed: SSE responses wait on it for the disconnect.
WebSocket frames have their own limit (``MAX_FRAME_BYTES``, close 1009).
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.exceptions import error_body

DISCONNECT: Message = {"type": "http.disconnect"}


def _refusal(status: int, code: str, message: str) -> tuple[Message, Message]:
    body = json.dumps(error_body(code, message)).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_timeout_s: float) -> None:
        self.app = app
        self.limit = max_body_bytes
        self.timeout_s = body_timeout_s

    def _too_large(self) -> tuple[Message, Message]:
        return _refusal(413, "payload_too_large", f"the request body is larger than {self.limit} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        framed = False  # a body can follow only with a Content-Length or a Transfer-Encoding (RFC 9112 6.3)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                framed = True
                try:
                    declared = int(value)
                except ValueError:
                    declared = limit + 1  # unreadable: refuse rather than guess
                if declared > limit:
                    for message in self._too_large():
                        await send(message)
                    return
            elif name == b"transfer-encoding":
                framed = True
        if not framed:
            # No body can come: nothing to count, and a long response (an SSE stream) is not sent
            # through one more wrapper per event.
            await self.app(scope, receive, send)
            return
        received = 0
        body_done = False
        refusal: tuple[Message, Message] | None = None
        forwarded = False

        async def limited_receive() -> Message:
            nonlocal received, body_done, refusal
            if refusal is not None:
                return DISCONNECT
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout(self.timeout_s):
                    message = await receive()
            except TimeoutError:
                refusal = _refusal(400, "bad_request", "the request body did not arrive in time")
                return DISCONNECT
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit:
                    refusal = self._too_large()
                    return DISCONNECT
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal forwarded
            if refusal is not None and not forwarded:
                return  # the app's answer to a body it never got whole: ours goes instead
            forwarded = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if refusal is None or forwarded:
                raise
        if refusal is not None and not forwarded:
            for message in refusal:
                await send(message)
