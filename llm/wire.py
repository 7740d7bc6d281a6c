"""HTTP/1.1 on asyncio for the upstream stream (``OPENAI_STREAM_PARSER=wire``).

The SDK builds the request (URL, auth, headers, body: an ``httpx2.Request``); this module only carries
it. Reading a streamed reply through anyio, httpcore2, h11 and httpx2 cost about a third of the
server's CPU under load (a cancel scope and several generator layers per chunk); here each TCP read
goes from ``data_received`` through a small chunked decoder straight to the one waiting reader.

Done like httpx2 with the SDK's defaults, so that the caller sees the same outcomes:

* errors are httpx2's classes for the same faults: ``ConnectError`` / ``ConnectTimeout`` while
  connecting, ``ReadTimeout`` when nothing arrives for the request's read timeout, ``ReadError`` on a
  reset, ``RemoteProtocolError`` for a premature close or a malformed response;
* framing as h11: ``Transfer-Encoding: chunked``, else ``Content-Length``, else read until close; no
  body for 204 and 304; interim 1xx responses are skipped; a ``Content-Encoding`` is decoded by httpx2;
* keep-alive as httpcore: a connection is reused only once its response was read to its clean end,
  without ``Connection: close``, on HTTP/1.1; idle ones expire after 5 s, at most 100 per origin;
* TLS with httpx2's default context (``create_ssl_context``: ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``
  honoured) and ALPN ``http/1.1``; cookies the server sets go to the given jar.

Not done (the caller sends such requests through httpx2 instead): proxies, HTTP/2, redirects,
authentication flows, schemes other than http and https. One connection per request in flight and
no bound on them (httpx2's pool stops at 1,000; the reply jobs are bounded well below that).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import re
import socket
import ssl
from asyncio import staggered
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import httpx2
from httpcore2._utils import is_socket_readable

Origin = tuple[str, str, int]  # (scheme, host, port)

MAX_IDLE_PER_ORIGIN = 100  # httpx2's max_keepalive_connections in the SDK's default client
KEEPALIVE_EXPIRY_S = 5.0  # httpx2's default keepalive_expiry
MAX_HEAD_BYTES = 64 * 1024  # each head: status line to blank line (h11 allows 16 KiB per event; we are lenient)
MAX_ERROR_BODY_BYTES = 4 * 1024 * 1024  # an error status's body, read whole to build the SDK's error
HIGH_WATER_BYTES = 256 * 1024  # body bytes buffered for a slow reader before the socket stops being read
DRAIN_S = 1.0  # after the caller's last event, how long the rest of a body (the terminator) may take
DRAIN_BYTES = 64 * 1024  # ... and how much of it may be discarded, before the connection is closed
HAPPY_EYEBALLS_DELAY_S = 0.25  # anyio.connect_tcp's (httpcore2's) delay between address attempts
_MAX_LINE = 16 * 1024  # a chunk-size or trailer line
_HEX = re.compile(rb"[0-9A-Fa-f]{1,20}")  # h11's chunk-size
_HEAD_END = re.compile(rb"\n\r?\n")  # h11's end of the header section

# Connection states.
_IDLE, _HEAD, _BODY, _DONE, _CLOSED = range(5)
# Body framings.
_CHUNKED, _LENGTH, _UNTIL_CLOSE = range(3)
# Chunked decoder states.
_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


class ChunkedDecoder:
    """The chunked transfer coding (RFC 9112 §7.1), sans-I/O: feed the bytes as they come, get the data.

    Strict like h11 (lines end with CRLF, 1 to 20 hex digits of size, extensions and trailers
    skipped). Once the last chunk and the trailers are read, ``done`` is set and ``extra`` holds what
    followed the body (nothing, on a sane connection). Raises ``httpx2.RemoteProtocolError``."""

    __slots__ = ("_pending", "_remaining", "_state", "done", "extra")

    def __init__(self) -> None:
        self.done = False
        self.extra = b""
        self._pending = b""
        self._remaining = 0
        self._state = _SIZE

    def feed(self, data: bytes) -> list[bytes]:
        if self._state == _SIZE and not self._pending:
            # The usual read: exactly one whole chunk (a streamed event), size line to CRLF.
            eol = data.find(b"\r\n", 0, 24)
            if eol > 0:
                size_text = data[:eol]
                if _HEX.fullmatch(size_text) is not None:
                    end = eol + 2 + int(size_text, 16)
                    if end > eol + 2 and len(data) == end + 2 and data.endswith(b"\r\n"):
                        return [data[eol + 2 : end]]
        return self._feed(data)

    def _feed(self, data: bytes) -> list[bytes]:
        if self._pending:
            data = self._pending + data
            self._pending = b""
        out: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                out.append(data[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _DATA_END
            elif state == _DATA_END:
                if end - pos < 2:
                    self._pending = data[pos:]
                    break
                if data[pos : pos + 2] != b"\r\n":
                    raise httpx2.RemoteProtocolError("malformed chunked body: chunk data not followed by CRLF")
                pos += 2
                self._state = _SIZE
            else:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if end - pos > _MAX_LINE:
                        raise httpx2.RemoteProtocolError("malformed chunked body: line too long")
                    self._pending = data[pos:]
                    break
                line = data[pos:eol]
                pos = eol + 2
                if state == _SIZE:
                    size = line.split(b";", 1)[0].rstrip(b" \t")
                    if _HEX.fullmatch(size) is None:
                        raise httpx2.RemoteProtocolError(f"malformed chunked body: bad chunk size {line[:40]!r}")
                    self._remaining = int(size, 16)
                    self._state = _DATA if self._remaining else _TRAILER
                elif not line:  # the blank line after the trailers: the end of the body
                    self.done = True
                    self.extra = data[pos:]
                    return out
        return out


class _Head:
    """A parsed status line and header section: the raw headers, and those that frame the body."""

    __slots__ = ("connection", "content_length", "other", "raw", "reason", "status", "transfer_encoding", "version")

    def __init__(self, block: bytes) -> None:
        lines = [line.removesuffix(b"\r") for line in block.split(b"\n")]  # CRLF, or LF alone as h11 allows
        version, _, rest = lines[0].partition(b" ")
        code, _, reason = rest.partition(b" ")
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise httpx2.RemoteProtocolError(f"malformed status line {lines[0][:80]!r}")
        self.version, self.status, self.reason = version, int(code), reason
        self.raw: list[tuple[bytes, bytes]] = []
        self.transfer_encoding: bytes | None = None
        self.content_length: int | None = None
        self.connection = b""
        self.other: set[bytes] = set()  # the lower-case names of the other headers
        for line in _unfold(lines[1:]):
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise httpx2.RemoteProtocolError(f"malformed header line {line[:80]!r}")
            value = value.strip(b" \t")
            self.raw.append((name, value))
            lower = name.lower()
            if lower == b"transfer-encoding":
                self.transfer_encoding = value.lower() if self.transfer_encoding is None else b"<several>"
            elif lower == b"content-length":
                if not value.isdigit() or (self.content_length is not None and int(value) != self.content_length):
                    raise httpx2.RemoteProtocolError(f"bad Content-Length {value[:40]!r}")
                self.content_length = int(value)
            elif lower == b"connection":
                self.connection += b"," + value.lower()
            else:
                self.other.add(lower)

    def value(self, name: bytes) -> bytes | None:
        """The first value of a header (``name`` lower-case)."""
        for key, value in self.raw:
            if key.lower() == name:
                return value
        return None


def _unfold(lines: list[bytes]) -> list[bytes]:
    """Join obsolete folded header lines (a line starting with a space or tab) as h11 does."""
    if not any(line[:1] in (b" ", b"\t") for line in lines):
        return lines
    out: list[bytes] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not out:
                raise httpx2.RemoteProtocolError("continuation line at start of headers")
            out[-1] += b" " + line.lstrip(b" \t")
        else:
            out.append(line)
    return out


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: one request at a time, its response parsed as it arrives."""

    def __init__(self, pool: WireClient, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.state = _IDLE
        self.head: _Head | None = None
        self.body: list[bytes] = []
        self.buffered = 0
        self.error: BaseException | None = None
        self.complete = False  # the body was read to its clean end
        self.reusable = False
        self.idle_since = 0.0
        self._buffer = b""  # the head so far
        self._framing = _UNTIL_CLOSE
        self._chunked: ChunkedDecoder | None = None
        self._remaining = 0
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._read_timeout: float | None = None
        self._last_read = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._draining = 0  # > 0: the caller is gone; bytes discarded until the clean end

    # --- asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self._last_read = self.loop.time()
        if self.state == _BODY:
            self._body_bytes(data)
        elif self.state == _HEAD:
            self._head_bytes(data)
        else:  # bytes nobody asked for: this connection is out of step, never reuse it
            self.reusable = False
            self.close()

    def eof_received(self) -> bool:
        if self.state == _BODY and self._framing == _UNTIL_CLOSE:
            self.reusable = False
            self._finish()
        elif self.state == _HEAD:
            self._fail(httpx2.RemoteProtocolError("Server disconnected without sending a response."))
        elif self.state == _BODY:
            self._fail(httpx2.RemoteProtocolError("peer closed connection without sending complete message body"))
        self.reusable = False
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state in (_HEAD, _BODY):
            if exc is not None:
                self._fail(httpx2.ReadError(str(exc) or type(exc).__name__))
            else:
                self._fail(httpx2.RemoteProtocolError("peer closed connection without sending complete message body"))
        self.state = _CLOSED
        self.reusable = False
        self._stop_watchdog()
        self.pool.forget(self)  # an idle one the server closed, or one its caller never released
        self._wake()

    # --- the request and its response ---------------------------------------------------------------
    def start(self, data: bytes, read_timeout: float | None) -> None:
        """Send one request (head and body in one write) and expect its response."""
        assert self.transport is not None
        self.state = _HEAD
        self.head, self.body, self.buffered, self.error, self.complete = None, [], 0, None, False
        self._buffer, self._chunked, self._draining = b"", None, 0
        self.reusable = True
        self._read_timeout = read_timeout
        self._last_read = self.loop.time()
        if read_timeout is not None:
            self._watchdog = self.loop.call_at(self._last_read + read_timeout, self._check_read)
        self.transport.write(data)

    async def wait_head(self) -> _Head:
        while self.head is None:
            if self.error is not None:
                raise self.error
            await self.wait()
        return self.head

    async def wait(self) -> None:
        """Until something arrives (bytes, the end, an error). Cancelling it is safe."""
        waiter = self._waiter = self.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def take(self) -> bytes:
        """The body bytes received since the last call, as one ``bytes``."""
        body = self.body
        data = body[0] if len(body) == 1 else b"".join(body)
        self.body, self.buffered = [], 0
        if self._paused and self.transport is not None:
            self._paused = False
            self._last_read = self.loop.time()  # the reader was slow, not the server
            self.transport.resume_reading()
        return data

    def drain(self) -> None:
        """The caller has what it wanted: reuse the connection if the body ends cleanly soon, else close."""
        if self.state == _DONE:
            self.pool.release(self)
        elif self.state == _BODY and self.error is None and self.reusable:
            self.body, self.buffered = [], 0
            self._draining = 1
            self._stop_watchdog()
            self._watchdog = self.loop.call_later(DRAIN_S, self.close)
            if self._paused and self.transport is not None:
                self._paused = False
                self.transport.resume_reading()
        else:
            self.close()

    def quiet(self) -> bool:
        """No bytes and no end pending on the socket, even if the loop has not yet told us (httpcore
        polls an idle socket the same way before reusing it): an idle connection the server has just
        closed is not reused."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        try:
            return sock is not None and not is_socket_readable(sock)  # poll(), not select(): any fd number
        except OSError:
            return False

    def close(self) -> None:
        """Close at once, whatever the state (idempotent; no await, so cancellation cannot skip it)."""
        self.reusable = False
        self._stop_watchdog()
        if self.state != _CLOSED:
            if self.state in (_HEAD, _BODY) and self.error is None:
                self._fail(httpx2.ReadError("connection closed"))
            self.state = _CLOSED
        if self.transport is not None:
            self.transport.abort()
        self.pool.forget(self)
        self._wake()

    # --- parsing ------------------------------------------------------------------------------------
    def _head_bytes(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        while True:
            match = _HEAD_END.search(buffer)
            # The limit holds however the head is split into reads: a part of one already at the limit
            # fails (the rest is one byte or more), and so does one too long that came whole in a read.
            if match is None:
                if len(buffer) >= MAX_HEAD_BYTES:
                    self._fail(httpx2.RemoteProtocolError("response head too long"))
                else:
                    self._buffer = buffer
                return
            if match.end() > MAX_HEAD_BYTES:
                self._fail(httpx2.RemoteProtocolError("response head too long"))
                return
            try:
                head = _Head(buffer[: match.start()])
            except httpx2.RemoteProtocolError as exc:
                self._fail(exc)
                return
            buffer = buffer[match.end() :]
            if 100 <= head.status < 200 and head.status != 101:
                continue  # an interim response (100 Continue, 103 Early Hints): the real one follows
            break
        self._buffer = b""
        self.head = head
        if head.version != b"HTTP/1.1" or b"close" in head.connection:
            self.reusable = False
        if head.transfer_encoding is not None:
            if head.transfer_encoding != b"chunked":
                self._fail(httpx2.RemoteProtocolError(f"unsupported Transfer-Encoding {head.transfer_encoding!r}"))
                return
            self._framing, self._chunked = _CHUNKED, ChunkedDecoder()
        elif head.status in (101, 204, 304):
            self._framing, self._remaining = _LENGTH, 0
        elif head.content_length is not None:
            self._framing, self._remaining = _LENGTH, head.content_length
        else:
            self._framing, self.reusable = _UNTIL_CLOSE, False
        self.state = _BODY
        if self._framing == _LENGTH and not self._remaining:
            self._finish()
        if buffer:
            self._body_bytes(buffer)
        self._wake()

    def _body_bytes(self, data: bytes) -> None:
        if self.state != _BODY:  # bytes after the end of the body
            self.reusable = False
            return
        framing = self._framing
        if framing == _CHUNKED:
            assert self._chunked is not None
            try:
                pieces = self._chunked.feed(data)
            except httpx2.RemoteProtocolError as exc:
                self._fail(exc)
                return
            if self._chunked.done:
                if self._chunked.extra:
                    self.reusable = False
                self._finish()
        elif framing == _LENGTH:
            if len(data) >= self._remaining:
                if len(data) > self._remaining:
                    self.reusable = False
                    data = data[: self._remaining]
                self._remaining = 0
                self._finish()
            else:
                self._remaining -= len(data)
            pieces = [data] if data else []
        else:
            pieces = [data]
        if self._draining:
            self._draining += sum(map(len, pieces))
            if self._draining > DRAIN_BYTES:
                self.close()
            elif self.state == _DONE:
                self.pool.release(self)
            return
        if pieces:
            self.body.extend(pieces)
            self.buffered += sum(map(len, pieces))
            # (Only while the body is still arriving: a connection whose body ended goes back to the pool,
            # and one paused there would never be read again.)
            if self.state == _BODY and self.buffered > HIGH_WATER_BYTES and not self._paused and self.transport:
                self._paused = True
                self.transport.pause_reading()
        self._wake()

    def _finish(self) -> None:
        self.state = _DONE
        self.complete = True
        self._stop_watchdog()

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.reusable = False
        self._stop_watchdog()
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- the read timeout: one timer per read-timeout period, not one per chunk ----------------------
    def _check_read(self) -> None:
        self._watchdog = None
        timeout = self._read_timeout
        if self.state not in (_HEAD, _BODY) or timeout is None:  # (a failure stops the watchdog itself)
            return
        now = self.loop.time()
        if self._paused:
            self._last_read = now
        due = self._last_read + timeout
        if now >= due:
            self._fail(httpx2.ReadTimeout(f"no bytes from the server in {timeout:g} s"))
        else:
            self._watchdog = self.loop.call_at(due, self._check_read)

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None


class WireResponse:
    """A response whose head has arrived; the body is read with :meth:`aiter_bytes`.

    ``request`` is the ``httpx2.Request`` sent (for the SDK's errors); :meth:`aclose` releases the
    connection (pooled only if the body was read to its clean end)."""

    def __init__(self, conn: _Connection, head: _Head, request: httpx2.Request) -> None:
        self._conn = conn
        self._head = head
        self.request = request
        self.status_code = head.status

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def has_redirect_location(self) -> bool:
        """As ``httpx2.Response.has_redirect_location``: a redirect the SDK's client would follow."""
        return self.status_code in (301, 302, 303, 307, 308) and b"location" in self._head.other

    def to_httpx(self, content: bytes) -> httpx2.Response:
        """This response as httpx2 would have built it, with ``content`` (still content-encoded) as body."""
        return httpx2.Response(
            self.status_code,
            headers=self._head.raw,
            stream=httpx2.ByteStream(content),
            request=self.request,
            extensions={"http_version": self._head.version, "reason_phrase": self._head.reason},
        )

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body, split as it arrived; raises httpx2's errors (see the module docstring)."""
        encoding = self._head.value(b"content-encoding")
        if encoding is None or encoding.strip().lower() in (b"", b"identity"):
            return self._raw()
        return self._decoded()

    async def _raw(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.body:
                yield conn.take()
            elif conn.error is not None:
                raise conn.error
            elif conn.complete:
                return
            elif conn.state == _CLOSED:
                raise httpx2.ReadError("connection closed")
            else:
                await conn.wait()

    async def _decoded(self) -> AsyncIterator[bytes]:
        # Rare on a streamed reply: httpx2's own decoders (gzip, deflate, br, zstd as installed).
        response = httpx2.Response(self.status_code, headers=self._head.raw, content=self._raw(), request=self.request)
        async for chunk in response.aiter_bytes():
            yield chunk

    async def aread(self, limit: int = MAX_ERROR_BODY_BYTES) -> bytes:
        """The whole raw body (at most ``limit`` bytes: the rest is cut off and the connection closed)."""
        parts: list[bytes] = []
        size = 0
        async for part in self._raw():
            parts.append(part)
            size += len(part)
            if size >= limit:
                self._conn.close()
                break
        return b"".join(parts)[:limit]

    async def aclose(self) -> None:
        """Release the connection: to the pool if the body was read to its clean end, else closed."""
        self.close()

    def close(self) -> None:
        conn = self._conn
        if conn.state == _DONE and conn.error is None:
            conn.pool.release(conn)
        else:
            conn.close()

    def release_after_end(self) -> None:
        """The caller read what it wanted (the SSE ``[DONE]``): the connection goes back to the pool if
        the rest of the body (usually just the chunked terminator) ends cleanly within ``DRAIN_S``."""
        self._conn.drain()


class WireClient:
    """Sends ``httpx2.Request`` objects over HTTP/1.1 connections kept per origin.

    ``cookies``: the jar that cookies set by the server go to (the SDK's httpx2 client's, so that
    later requests, built by the SDK, carry them as they would without this client)."""

    def __init__(self, *, cookies: httpx2.Cookies | None = None, trust_env: bool = True) -> None:
        self._cookies = cookies
        self._trust_env = trust_env
        self._idle: dict[Origin, list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    async def send(self, request: httpx2.Request) -> WireResponse:
        """Send ``request`` and return once the response head has arrived.

        Raises httpx2's ``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``, ``ReadError``,
        ``RemoteProtocolError`` or ``LocalProtocolError``. Cancelling it closes the connection."""
        if self._closed:
            raise RuntimeError("WireClient is closed")
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx2.UnsupportedProtocol(f"the wire client speaks http and https, not {scheme!r}")
        origin = (scheme, url.host, url.port or (443 if scheme == "https" else 80))
        timeouts: dict[str, Any] = request.extensions.get("timeout") or {}
        data = _serialize(request)
        conn = self._checkout(origin) or await self._connect(origin, timeouts.get("connect"))
        self._busy.add(conn)
        try:
            conn.start(data, timeouts.get("read"))
            head = await conn.wait_head()
        except BaseException:
            conn.close()
            raise
        if self._cookies is not None and b"set-cookie" in head.other:
            self._cookies.extract_cookies(httpx2.Response(head.status, headers=head.raw, request=request))
        return WireResponse(conn, head, request)

    def idle_connections(self, origin: Origin | None = None) -> int:
        """Idle pooled connections (for one origin, or all)."""
        if origin is not None:
            return len(self._idle.get(origin, ()))
        return sum(map(len, self._idle.values()))

    async def aclose(self) -> None:
        """Close every connection, idle or in use (a read in progress fails with ``ReadError``)."""
        self._closed = True
        for conn in [*self._busy, *(c for idle in self._idle.values() for c in idle)]:
            conn.close()
        self._idle.clear()
        self._busy.clear()

    # --- the pool (called by connections) ------------------------------------------------------------
    def release(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        idle = self._idle.setdefault(conn.origin, [])
        if (
            conn.reusable
            and not conn._paused
            and not self._closed
            and len(idle) < MAX_IDLE_PER_ORIGIN
            and conn.state == _DONE
        ):
            conn.state = _IDLE
            conn.idle_since = conn.loop.time()
            idle.append(conn)
        else:
            conn.close()

    def forget(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)

    def _checkout(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if idle:
            # The oldest first: those idle past the keep-alive expiry are closed, not only the one popped.
            now = idle[0].loop.time()
            while idle and now - idle[0].idle_since >= KEEPALIVE_EXPIRY_S:
                idle.pop(0).close()
        while idle:  # (all within the expiry now: the list is in the order they went idle)
            conn = idle.pop()  # the most recently used: the least likely to have been closed by the server
            if conn.state == _IDLE and conn.quiet():
                return conn
            conn.close()
        return None

    async def _connect(self, origin: Origin, connect_s: float | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        context = self._ssl_context() if scheme == "https" else None
        extra: dict[str, Any] = {"ssl": context, "server_hostname": host} if context is not None else {}
        try:
            async with asyncio.timeout(connect_s):
                sock = await _open_socket(loop, host, port)
                try:
                    transport, conn = await loop.create_connection(
                        lambda: _Connection(self, origin), sock=sock, **extra
                    )
                except BaseException:
                    sock.close()
                    raise
        except TimeoutError as exc:
            raise httpx2.ConnectTimeout(f"connecting to {host}:{port} took over {connect_s:g} s") from exc
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise httpx2.ConnectError(str(exc) or type(exc).__name__) from exc
        conn.transport = transport  # uvloop calls connection_made a little later
        return conn

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            # What httpx2's transport uses by default, with the ALPN httpcore2 sets for HTTP/1.1.
            context = httpx2.create_ssl_context(trust_env=self._trust_env)
            context.set_alpn_protocols(["http/1.1"])
            self._ssl = context
        return self._ssl


async def _open_socket(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A connected TCP socket, addresses tried as anyio's ``connect_tcp`` (httpcore2's) tries them:
    families interleaved, the next attempt started after 250 ms or when one fails (happy eyeballs,
    RFC 8305). Done here because uvloop's ``create_connection`` has no happy eyeballs."""
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    families: dict[int, list[Any]] = {}
    for info in infos:
        families.setdefault(info[0], []).append(info)
    ordered = [info for group in itertools.zip_longest(*families.values()) for info in group if info is not None]
    connected: list[socket.socket] = []

    async def attempt(info: Any) -> socket.socket:
        family, kind, proto, _, address = info
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        connected.append(sock)
        return sock

    if len(ordered) == 1:
        return await attempt(ordered[0])
    winner: socket.socket | None = None
    errors: Sequence[BaseException | None] = ()
    try:
        winner, _, errors = await staggered.staggered_race(
            [functools.partial(attempt, info) for info in ordered], HAPPY_EYEBALLS_DELAY_S
        )
    finally:
        for sock in connected:  # attempts that also succeeded, or all of them when cancelled
            if sock is not winner:
                sock.close()
    if winner is None:
        raise next((e for e in errors if isinstance(e, OSError)), OSError(f"no address to connect to for {host}"))
    return winner


def _serialize(request: httpx2.Request) -> bytes:
    """The request line, the headers as httpx2 built them (Host and Content-Length included), the body."""
    raw = request.headers.raw
    head = b"".join(
        [
            b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), request.url.raw_path),
            *[b"%s: %s\r\n" % header for header in raw],
            b"\r\n",
        ]
    )
    # h11 refuses a CR, LF or NUL inside a header (it would end the line early): checked on the whole
    # head at once, by counting line ends (one per header, the request line and the blank line).
    lines = len(raw) + 2
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\0" in head:
        raise httpx2.LocalProtocolError("illegal character in a request header")
    return head + request.content
