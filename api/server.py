"""Serving the app with uvicorn: a ``uvicorn.Server`` subclass that starts our shutdown first.

Uvicorn's ``Server.shutdown`` closes WebSockets (1012) but waits for streaming HTTP responses to
end before it runs the lifespan shutdown, and an SSE response never ends by itself: shutdown would
hang until ``timeout_graceful_shutdown``. :class:`Server` tells the app's runtime first (stop
taking replies, close every connection so clients resume elsewhere), then lets uvicorn go on.
It covers SIGTERM/SIGINT and ``server.should_exit = True`` (tests, embedding code) alike, and
patches nothing for the rest of the process.

``python -m api``, ``make run-cluster`` and the tests serve through :func:`build_server`, which also
sets the WebSocket frame limit from ``MAX_FRAME_BYTES`` so uvicorn refuses an oversized frame
(close 1009) before reading it whole. Plain ``uvicorn api.main:app`` works too, but uvicorn's own
server then waits ``--timeout-graceful-shutdown`` for open SSE responses, and its frame limit is
``--ws-max-size`` (16 MiB by default; the app still closes anything over the limit with 1009).

Connection hygiene (docs/security.md), set here from :class:`Settings`:

* ``HTTP_HEADER_TIMEOUT_S`` — a connection must send a request's headers whole within this long
  of connecting or of starting the request (uvicorn itself has no such deadline: a client that
  trickles header bytes, or sends none, holds its connection forever — slowloris);
* ``HTTP_KEEP_ALIVE_S`` — an idle keep-alive connection is closed after this long;
* ``HTTP_MAX_CONCURRENCY`` — uvicorn's ``limit_concurrency``: past this many connections + running
  requests, new requests get ``503``;
* the request *body* deadline (``HTTP_BODY_TIMEOUT_S``) is kept by ``api/body_limit.py``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI
from loguru import logger

from api.settings import Settings

# After telling connections to close, let their handlers send the close frames before uvicorn
# starts closing transports itself.
CLOSE_FRAMES_HEADSTART_S = 0.05
# uvicorn counts the whole WebSocket message against ws_max_size; leave room for the JSON around
# a frame that the app then checks exactly against MAX_FRAME_BYTES.
WS_FRAME_SLACK_BYTES = 1024
# uvicorn's own last resort after SIGTERM, on top of our drain (SHUTDOWN_GRACE_S).
UVICORN_SHUTDOWN_MARGIN_S = 10


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # 1. Our runtime stops taking replies and asks every connection to close (WS 1012, SSE end).
        self._on_shutdown()
        # 2. The handlers send their close frames.
        await asyncio.sleep(CLOSE_FRAMES_HEADSTART_S)
        # 3. uvicorn closes listeners and connections, then runs the lifespan shutdown (our drain).
        await super().shutdown(sockets)


def header_deadline_protocol(header_timeout_s: float) -> type[asyncio.Protocol] | str:
    """uvicorn's httptools protocol with a deadline on reading each request's headers: from the
    connection (or the first byte of the next request on a kept-alive one) until the headers are
    complete. A client that misses it is disconnected. ``"auto"`` when httptools is missing."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - uvicorn[standard] ships httptools
        logger.warning("httptools is not installed: no header read deadline (HTTP_HEADER_TIMEOUT_S)")
        return "auto"

    class HeaderDeadlineProtocol(HttpToolsProtocol):
        _header_deadline: asyncio.TimerHandle | None = None

        def _start_header_deadline(self) -> None:
            if self._header_deadline is None:
                self._header_deadline = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _stop_header_deadline(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_too_slow(self) -> None:
            self._header_deadline = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_header_deadline()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._start_header_deadline()

        def on_headers_complete(self) -> None:
            self._stop_header_deadline()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_deadline()
            super().connection_lost(exc)

    return HeaderDeadlineProtocol


def build_server(app: FastAPI, settings: Settings, *, server_class: type[Server] = Server, **config: Any) -> Server:
    """A server for ``app``; ``config`` are extra ``uvicorn.Config`` options (host, port, log_level…).
    ``server_class``: a subclass of :class:`Server` (the tests' notices ``should_exit`` sooner)."""
    options: dict[str, Any] = {
        "ws_max_size": settings.max_frame_bytes + WS_FRAME_SLACK_BYTES,
        # permessage-deflate keeps a zlib compressor and decompressor per connection (about half of
        # an idle WebSocket's memory) and compresses every frame; our frames are small JSON objects
        # a few dozen bytes long, so it buys little (docs/performance.md, "Idle memory").
        "ws_per_message_deflate": False,
        "timeout_graceful_shutdown": int(settings.shutdown_grace_s) + UVICORN_SHUTDOWN_MARGIN_S,
        "lifespan": "on",
        # The client address is ours to find (api/limits.py, TRUSTED_PROXIES): uvicorn's own
        # X-Forwarded-For handling would hand the limits whatever a client on 127.0.0.1 wrote.
        "proxy_headers": False,
        "http": header_deadline_protocol(settings.http_header_timeout_s),
        "timeout_keep_alive": settings.http_keep_alive_s,
        "limit_concurrency": settings.http_max_concurrency,
        **config,
    }

    def begin_shutdown() -> None:
        runtime = getattr(app.state, "runtime", None)
        if runtime is not None:
            runtime.begin_shutdown()

    return server_class(uvicorn.Config(app, **options), on_shutdown=begin_shutdown)
