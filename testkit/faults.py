"""Fault injection with real processes: server instances that can be killed or frozen, a TCP link that
can be blackholed. (Redis's own faults are :class:`testkit.processes.RedisProcess`'s ``kill``,
``restart``, ``pause`` and ``resume``.)

* :class:`InstanceProcess` -- ``python -m api`` as a child process, on its own port, logging JSON lines
  to a file: ``kill()`` is ``kill -9``, ``pause()`` / ``resume()`` are ``SIGSTOP`` / ``SIGCONT`` (the
  "zombie": it wakes up believing nothing happened), ``stop()`` is a graceful ``SIGTERM``.
* :class:`BlackholeProxy` -- an asyncio TCP proxy on 127.0.0.1 whose ``blackhole()`` stops every byte
  in both directions without closing a socket (a partition, a dead NAT entry, a silent firewall), and
  whose ``restore()`` lets the held bytes through again, as TCP retransmission would.

Every wait is bounded by a deadline in the scaled unit :data:`testkit.T`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import Any

import httpx

from persona.demo import compose_answer
from persona.loader import load_brands
from testkit import T
from testkit.processes import RedisProcess, free_port
from testkit.server import SECRET

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# What a fault test's instance runs with unless told otherwise: a reply of the offline demo takes a few
# seconds (~50 words at ~60 ms), pings are frequent enough that a frozen instance is noticed quickly.
INSTANCE_DEFAULTS: dict[str, str] = {
    "LLM_PROVIDER": "offline",
    "OFFLINE_TOKEN_DELAY_MS": "60",
    "HEARTBEAT_MS": "1000",
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "INFO",
    "SHUTDOWN_GRACE_S": "5",
}
# The settings that failover and outage handling read (names from issue 9; the server ignores names
# it does not know). In units of T, like every test time; the environment gets them scaled.
LEASE_TTL_S = 1.5
"""The producer's lease: a dead or frozen producer's stream is taken over about this long after it stopped."""
OUTAGE_DEADLINE_S = 3.0
"""How long Redis may stay away before every reply it holds up ends with ``buffer_unavailable``."""
GRACE_S = 5.0
"""The "few seconds" a test allows beyond a deadline of the server (scheduling, the rest of the reply)."""
HEARTBEAT_MS = 1000


def fault_env(**overrides: str | float | int) -> dict[str, str | float | int]:
    """The environment of an instance in a fault test: lease and outage deadline set, pings every second."""
    return {
        "LEASE_TTL_S": LEASE_TTL_S * T,
        "BUFFER_OUTAGE_DEADLINE_S": OUTAGE_DEADLINE_S * T,
        "HEARTBEAT_MS": HEARTBEAT_MS,
        **overrides,
    }


QUESTIONS = (
    "How do I brew a pour-over, and how long does shipping take?",
    "Which beans do you roast, and can I pause my subscription?",
    "A bag arrived damaged: can I get a refund, and when is the cafe open?",
)
"""Questions to the demo brand whose offline answers are long (~50 words: a few seconds to stream)."""


@cache
def expected_answer(question: str, brand: str = "demo") -> str:
    """The exact text the offline provider streams for ``question`` as a conversation's first message."""
    return compose_answer(load_brands(PROJECT_ROOT / "brands")[brand], question)


# Variables a child process needs from ours; nothing else leaks in (a developer's BUFFER_URL or
# OPENAI_API_KEY must not change what the test runs).
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "VIRTUAL_ENV")


class InstanceProcess:
    """One server instance as a real process: ``[python, -m, api]`` in the project root.

    ``overrides`` are settings as environment variables (``LEASE_TTL_S="1.5"``); names the server does
    not know are ignored by it. All instances share :data:`testkit.server.SECRET`, so a token issued by
    one verifies on every other."""

    def __init__(self, buffer_url: str, instance_id: str, **overrides: str | float | int) -> None:
        self.buffer_url = buffer_url
        self.instance_id = instance_id
        self.port = free_port()
        self.env: dict[str, str] = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        self.env.update(INSTANCE_DEFAULTS)
        self.env.update(
            HOST="127.0.0.1",
            PORT=str(self.port),
            BUFFER_URL=buffer_url,
            SESSION_SECRET=SECRET,
            INSTANCE_ID=instance_id,
            PYTHONUNBUFFERED="1",
        )
        self.env.update({name.upper(): str(value) for name, value in overrides.items()})
        self.log_path = Path(tempfile.mkdtemp(prefix=f"instance-{instance_id}-")) / "log.jsonl"
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.alive else "dead"
        return f"<InstanceProcess {self.instance_id} :{self.port} {state}>"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    async def start(self, timeout: float = 40.0) -> InstanceProcess:
        """Spawn the process and wait until ``GET /healthz`` answers (at most ``timeout`` * T seconds).

        Start-up costs ~6 s of CPU (the guard's pattern families compiled by ``regex``, the language
        detector's models): two instances starting together on a busy 2-core machine took over 20 s."""
        assert self.proc is None, "already started"
        with self.log_path.open("ab") as log:
            # Popen returns once the child is forked (no wait on it); its handle is what signals need.
            self.proc = subprocess.Popen(  # noqa: ASYNC220
                [sys.executable, "-m", "api"],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout * T
        async with httpx.AsyncClient(base_url=self.base_url, timeout=1.0 * T, verify=False) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self!r} exited with {self.proc.returncode} during start-up:\n{self.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/healthz")).status_code == 200:
                        return self
                await asyncio.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{self!r} did not answer /healthz within {timeout * T:.1f} s:\n{self.tail()}")

    def kill(self) -> None:
        """``kill -9``: no shutdown, no terminal events, sockets reset by the kernel."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.paused = False

    async def stop(self, timeout: float = 30.0) -> int:
        """``SIGTERM`` and wait for the graceful shutdown (killed after ``timeout`` * T); the exit code."""
        assert self.proc is not None, "not started"
        self.resume()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, timeout * T)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def pause(self) -> None:
        """``SIGSTOP``: the process freezes mid-whatever; its sockets stay open and nothing answers."""
        assert self.alive, f"{self!r} is not running"
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """``SIGCONT``: it carries on from where it froze, unaware that time passed."""
        if self.proc is not None and self.paused and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def logs(self) -> list[dict[str, Any]]:
        """Every line the process wrote so far, parsed (a line that is not JSON becomes ``{"message": line}``)."""
        out: list[dict[str, Any]] = []
        if not self.log_path.exists():
            return out
        for line in self.log_path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = {"message": line}
            out.append(record if isinstance(record, dict) else {"message": line})
        return out

    def log_messages(self) -> list[str]:
        return [str(record.get("message", "")) for record in self.logs()]

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        """Kill if still running (finalizers: nothing outlives its test); the log file stays for reading."""
        self.kill()


async def wait_for_log(instance: InstanceProcess, needle: str, timeout: float) -> str | None:
    """The first log message of ``instance`` containing ``needle`` (case-insensitive), waiting at most
    ``timeout`` * T seconds; ``None`` if none appeared."""
    deadline = time.monotonic() + timeout * T
    while True:
        for message in instance.log_messages():
            if needle.lower() in message.lower():
                return message
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.1)


InstanceFactory = Callable[..., Awaitable[InstanceProcess]]
"""``await factory(buffer_url, instance_id, **env)``: a started instance (the ``instances`` fixture)."""

RedisFactory = Callable[..., RedisProcess]
"""``factory(persistent=False)``: a started ``redis-server`` a test may kill, restart or pause (``redis_servers``)."""


class BlackholeProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream_port`` that can silently stop forwarding.

    While blackholed, nothing is read from either side and nothing is written (the bytes wait in the
    kernel's buffers), and new connections are accepted but not connected onwards: to both ends the
    link just goes silent, no FIN, no RST. ``restore()`` lets everything through again, so a client
    whose own timeout did not fire yet sees a slow link, not a broken stream, as after a real partition
    healed by TCP retransmission."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.server: asyncio.Server | None = None
        self._open = asyncio.Event()
        self._open.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0
        self.bytes_forwarded = 0
        self._closing = False

    @property
    def url(self) -> str:
        """A ``redis://`` URL through the proxy (for an upstream that is Redis)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def blackholed(self) -> bool:
        return not self._open.is_set()

    async def start(self) -> BlackholeProxy:
        self.server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def blackhole(self) -> None:
        self._open.clear()

    def restore(self) -> None:
        self._open.set()

    async def close(self) -> None:
        """Stop listening and abort every connection; the pumps end by themselves (a cancelled
        connection handler would be logged as an error by asyncio's streams)."""
        self._closing = True
        if self.server is not None:
            self.server.close()
        self._open.set()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5 * T)
        if self.server is not None:
            await self.server.wait_closed()
            self.server = None

    async def __aenter__(self) -> BlackholeProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            await self._open.wait()  # a connection made during a blackhole hangs until restored
            if self._closing:
                return
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._writers.add(upstream)
            await asyncio.gather(self._pump(reader, upstream), self._pump(up_reader, writer))
        except (ConnectionError, OSError):
            pass
        finally:
            for w in (writer, upstream):
                if w is not None:
                    self._writers.discard(w)
                    w.close()
                    with contextlib.suppress(Exception):
                        await w.wait_closed()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._open.wait()
                data = await reader.read(65536)
                if not data:
                    await self._open.wait()  # an end of stream is held back like any byte
                    break
                # Read just before a blackhole began: held here, delivered when restored.
                await self._open.wait()
                writer.write(data)
                await writer.drain()
                self.bytes_forwarded += len(data)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
