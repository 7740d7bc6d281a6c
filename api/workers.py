"""``WORKERS=N`` (N > 1): N server processes on one listening socket, to use every core of a machine.

Each process is a whole instance (its own ``INSTANCE_ID``, event loop, generation jobs and fan-out)
sharing the Redis buffer exactly as separate machines would, so it needs ``BUFFER_URL`` to be Redis:
the memory buffer lives in one process and is refused at start-up (``api/settings.py``). Supervision
is deliberately small: SIGTERM/SIGINT are passed to every worker (each drains as one server does),
and if a worker dies on its own the others are stopped and the command exits non-zero, so the process
manager above it (systemd, Kubernetes, compose) restarts the whole set. (The worker function lives
here, not in ``api/__main__.py``: a spawned process cannot import ``__main__`` of ``python -m``.)

::

    parent ── bind HOST:PORT once ──┬─ spawn worker 1: Settings() → app → Server.run(sockets=[sock])
       │                            └─ spawn worker N   (the kernel spreads accepted connections)
       └─ SIGTERM ─▶ every worker ─▶ each drains (SHUTDOWN_GRACE_S) and exits ─▶ parent exits 0
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import signal
import socket
import sys
from types import FrameType

from loguru import logger
from pydantic import ValidationError

from api.app import create_app
from api.logs import setup_logging
from api.server import build_server
from api.settings import InsecureSettings, Settings

# How often the parent looks for a worker that died on its own.
WORKER_POLL_S = 0.5
# A worker that has not exited this long after the end of the drain is killed.
WORKER_KILL_MARGIN_S = 15.0


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        sys.exit(f"invalid configuration: {exc}")


def serve(settings: Settings, sockets: list[socket.socket] | None = None) -> None:
    setup_logging(
        instance=settings.instance_id, level=settings.log_level, fmt=settings.log_format, tags=settings.log_tags
    )
    try:
        app = create_app(settings)
    except InsecureSettings as exc:
        logger.error("refusing to start: {}", exc)
        sys.exit(2)
    server = build_server(
        app,
        settings,
        host=settings.host,
        port=settings.port,
        log_config=None,  # logging is ours (api/logs.py): loguru, JSON off a terminal
    )
    server.run(sockets=sockets)


def _worker(sock: socket.socket) -> None:
    """One worker process: the settings come from the environment the parent prepared."""
    serve(load_settings(), [sock])


def run_workers(settings: Settings) -> int:
    """Serve with ``settings.workers`` processes on one socket; returns the exit code."""
    setup_logging(
        instance=settings.instance_id, level=settings.log_level, fmt=settings.log_format, tags=settings.log_tags
    )
    if not settings.session_secret.get_secret_value():
        # Tokens must verify in every worker: one random key for this run, handed to all of them.
        os.environ["SESSION_SECRET"] = secrets.token_urlsafe(32)
        logger.warning("SESSION_SECRET is not set: the {} workers share a random key for this run", settings.workers)
    os.environ.pop("INSTANCE_ID", None)  # each worker is its own instance
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.set_inheritable(True)
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker, args=(sock,), name=f"brandchat-worker-{i}") for i in range(settings.workers)
    ]
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.is_alive() and worker.pid is not None:
                os.kill(worker.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for worker in workers:
        worker.start()
    logger.info("serving on {}:{} with {} workers", settings.host, settings.port, settings.workers)
    code = 0
    while any(w.is_alive() for w in workers):
        for worker in workers:
            worker.join(WORKER_POLL_S / len(workers))
            if not stopping and not worker.is_alive():
                logger.error("worker {} exited with {}: stopping the others", worker.name, worker.exitcode)
                code = 1
                stop(signal.SIGTERM, None)
        if stopping:
            for worker in workers:
                worker.join(settings.shutdown_grace_s + WORKER_KILL_MARGIN_S)
                if worker.is_alive():
                    worker.kill()
                    code = 1
    sock.close()
    return code
