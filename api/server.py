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
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI

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


def build_server(app: FastAPI, settings: Settings, **config: Any) -> Server:
    """A server for ``app``; ``config`` are extra ``uvicorn.Config`` options (host, port, log_level…)."""
    options: dict[str, Any] = {
        "ws_max_size": settings.max_frame_bytes + WS_FRAME_SLACK_BYTES,
        "timeout_graceful_shutdown": int(settings.shutdown_grace_s) + UVICORN_SHUTDOWN_MARGIN_S,
        "lifespan": "on",
        # The client address is ours to find (api/limits.py, TRUSTED_PROXIES): uvicorn's own
        # X-Forwarded-For handling would hand the limits whatever a client on 127.0.0.1 wrote.
        "proxy_headers": False,
        **config,
    }

    def begin_shutdown() -> None:
        runtime = getattr(app.state, "runtime", None)
        if runtime is not None:
            runtime.begin_shutdown()

    return Server(uvicorn.Config(app, **options), on_shutdown=begin_shutdown)
