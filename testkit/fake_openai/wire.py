"""HTTP/1.1 by hand for the fake OpenAI server: reading a request, writing heads, chunks and errors.

Written directly on asyncio streams (not on an HTTP library) so that the server can misbehave at
the socket level exactly where a behaviour says: stop mid-chunk, hold the socket open, reset it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any

MAX_LINE = 64 * 1024
"""The longest request or header line read (the ``limit`` of the server's stream readers)."""
MAX_HEADERS = 200
MAX_BODY = 16 * 1024 * 1024

REASONS: dict[int, str] = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class ClientGone(Exception):
    """The client closed (or reset) its side of the connection."""


class BadRequest(Exception):
    """The bytes received are not an HTTP/1.1 request we understand."""


class Conn:
    """One client connection: its streams and a watcher that notices the client going away."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.gone = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    def watch(self) -> None:
        """Start reading until EOF in the background (the request has been read by then)."""
        self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        try:
            while await self.reader.read(65536):
                pass
        except (ConnectionError, OSError):
            pass
        self.gone.set()

    async def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    def check(self) -> None:
        if self.gone.is_set() or self.writer.transport.is_closing():
            raise ClientGone

    async def write(self, data: bytes) -> None:
        self.check()
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ClientGone from exc

    async def write_chunk(self, data: bytes) -> None:
        """Write ``data`` as one HTTP/1.1 chunk (chunked transfer-coding)."""
        if data:
            await self.write(b"%x\r\n%s\r\n" % (len(data), data))

    async def end_chunks(self) -> None:
        """Write the chunked-encoding terminator: the response is complete at the HTTP level."""
        await self.write(b"0\r\n\r\n")

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``; raise :class:`ClientGone` at once if the client goes away."""
        self.check()
        if seconds <= 0:
            return
        try:
            async with asyncio.timeout(seconds):
                await self.gone.wait()
        except TimeoutError:
            return
        raise ClientGone

    async def hold(self) -> None:
        """Send nothing until the client goes away (or the server stops and cancels us)."""
        await self.gone.wait()

    def reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER on, timeout 0, then abort)."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


async def read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str], bytes] | None:
    """Read one HTTP/1.1 request: request line, headers, and a Content-Length or chunked body."""
    try:
        line = await reader.readline()
    except (asyncio.LimitOverrunError, ValueError) as exc:
        raise BadRequest("request line too long") from exc
    if not line:
        return None
    parts = line.decode("latin-1").strip().split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(f"bad request line: {line!r}")
    method, target, _version = parts

    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS):
        try:
            raw = await reader.readline()
        except (asyncio.LimitOverrunError, ValueError) as exc:
            raise BadRequest("header line too long") from exc
        if not raw:
            raise asyncio.IncompleteReadError(b"", None)
        if raw in (b"\r\n", b"\n"):
            break
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep:
            raise BadRequest(f"bad header line: {raw!r}")
        headers[name.strip().lower()] = value.strip()
    else:
        raise BadRequest("too many headers")

    body = b""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        pieces: list[bytes] = []
        total = 0
        while True:
            size_line = await reader.readline()
            if not size_line:
                raise asyncio.IncompleteReadError(b"", None)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise BadRequest("bad chunk size") from exc
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            total += size
            if total > MAX_BODY:
                raise BadRequest("body too large")
            pieces.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(pieces)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError as exc:
            raise BadRequest("bad content-length") from exc
        if length < 0 or length > MAX_BODY:
            raise BadRequest("bad content-length")
        body = await reader.readexactly(length)
    return method, target, headers, body


def reason(status: int) -> str:
    """The reason phrase of the status line."""
    return REASONS.get(status, "Error" if status >= 400 else "OK")


def error_body(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error JSON: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    """The status line and the headers, through the blank line that ends them."""
    lines = [f"HTTP/1.1 {status} {reason(status)}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
