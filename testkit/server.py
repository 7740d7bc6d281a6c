"""This app on real uvicorn servers on ephemeral ports, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from api.app import create_app
from api.runtime import Runtime
from api.server import Server, build_server
from api.settings import PROJECT_ROOT, Settings
from testkit import T

SECRET = "test-secret-shared-by-instances-of-one-test-run"

# The tests run the server in dev mode (the demo brand's published dev key opens the compatible
# endpoint) with a proper secret shared by instances, and limits out of the way of tests that send
# a lot from 127.0.0.1; tests/test_security.py runs production mode and the default limits.
TEST_DEFAULTS: dict[str, Any] = {
    "app_env": "dev",
    "session_secret": SECRET,
    "rate_replies_per_min": 100_000,
    "rate_negotiates_per_min": 100_000,
    "max_connections_per_address": 100_000,
    "max_running_replies": 100_000,
    "max_running_replies_per_brand": 100_000,
    "offline_token_delay_ms": 2,
    "heartbeat_ms": 15_000,
    "llm_provider": "offline",
    "shutdown_grace_s": 5.0,
}


def make_brands_dir() -> Path:
    """The shipped brands plus ``fallback-demo``: the demo brand with an error fallback."""
    directory = Path(tempfile.mkdtemp(prefix="brands-"))
    for path in (PROJECT_ROOT / "brands").glob("*.yaml"):
        shutil.copy(path, directory / path.name)
    demo = (PROJECT_ROOT / "brands" / "demo.yaml").read_text()
    fallback = demo.replace("id: demo", "id: fallback-demo").replace(
        "fallbacks:\n", "fallbacks:\n  error: Sorry, our kettle is acting up. Please ask me again in a moment.\n"
    )
    (directory / "fallback-demo.yaml").write_text(fallback)
    return directory


class PromptServer(Server):
    """:class:`api.server.Server` whose main loop notices ``should_exit`` within a few milliseconds.

    uvicorn's main loop looks at ``should_exit`` once every 0.1 s (``on_tick``); a test server would
    wait for that tick on every stop, and the suite stops a few hundred. ``on_tick`` (the ``Date``
    header, ``should_exit``, ``limit_max_requests``) still runs every 0.1 s; only the check of
    ``should_exit`` in between is added. Shutdown itself is :class:`api.server.Server`'s, unchanged."""

    async def main_loop(self) -> None:
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            for _ in range(20):
                await asyncio.sleep(0.005)
                if self.should_exit:
                    break
            should_exit = await self.on_tick(counter)


@dataclass
class RunningServer:
    settings: Settings
    app: Any
    server: uvicorn.Server
    sock: socket.socket
    task: asyncio.Task[None] | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def stop(self) -> None:
        """Graceful stop, as on SIGTERM: close sockets with 1012, drain replies, lifespan shutdown."""
        if self.task is None:
            return
        self.server.should_exit = True
        async with asyncio.timeout(30 * T):
            await self.task
        self.task = None


async def start_server(port: int = 0, **overrides: Any) -> RunningServer:
    values = {**TEST_DEFAULTS, **overrides}
    values.setdefault("brands_dir", make_brands_dir())
    settings = Settings(**values)
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = build_server(app, settings, server_class=PromptServer, log_level="warning", timeout_graceful_shutdown=30)
    running = RunningServer(settings, app, server, sock, port=sock.getsockname()[1])
    running.task = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(10 * T):
        while not server.started:
            if running.task.done():
                running.task.result()
                raise RuntimeError("server exited during start-up")
            await asyncio.sleep(0.01)
    return running


ServerFactory = Callable[..., Awaitable[RunningServer]]
"""``await factory(**settings)``: a started server (what :func:`server_pool` yields)."""


@contextlib.asynccontextmanager
async def server_pool() -> AsyncIterator[ServerFactory]:
    """A factory of servers (``factory(**settings)``); every server it started is stopped on exit."""
    started: list[RunningServer] = []

    async def factory(**overrides: Any) -> RunningServer:
        server = await start_server(**overrides)
        started.append(server)
        return server

    try:
        yield factory
    finally:
        for server in reversed(started):
            await server.stop()
