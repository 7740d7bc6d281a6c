"""A request body limit enforced while the body is read, before anything parses it.

A ``Content-Length`` over the limit is answered at once, without reading a byte of the body. A
body without one (chunked) is counted as it arrives; the message that crosses the limit is not
handed on: the app sees the client go away, whatever it answers is dropped, and the client gets
``413 payload_too_large`` in the project's error body. Memory per request is bounded by the limit
plus one chunk. WebSocket frames have their own limit (``MAX_FRAME_BYTES``, close 1009).
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.exceptions import error_body


def _too_large_response(limit: int) -> tuple[Message, Message]:
    body = json.dumps(error_body("payload_too_large", f"the request body is larger than {limit} bytes")).encode()
    start: Message = {
        "type": "http.response.start",
        "status": 413,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = limit + 1  # unreadable: refuse rather than guess
                if declared > limit:
                    for message in _too_large_response(limit):
                        await send(message)
                    return
        received = 0
        too_large = False
        forwarded = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal forwarded
            if too_large and not forwarded:
                return  # the app's answer to a body it never got whole: ours goes instead
            forwarded = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not too_large or forwarded:
                raise
        if too_large and not forwarded:
            for message in _too_large_response(limit):
                await send(message)
