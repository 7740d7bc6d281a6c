"""``WORKERS``: several server processes on one socket over Redis; the memory buffer refuses them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from api.settings import PROJECT_ROOT
from testkit import T
from testkit.processes import free_port

pytestmark = pytest.mark.timeout(60)


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "LOG_FORMAT": "json", "LOG_LEVEL": "INFO", "LLM_PROVIDER": "offline", **extra}


def test_more_than_one_worker_on_the_memory_buffer_is_refused_at_start_up() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "api"],
        env=env(WORKERS="2", BUFFER_URL="memory://", PORT=str(free_port())),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=30 * T,
    )
    assert done.returncode != 0
    assert "WORKERS=2 needs a shared buffer" in done.stderr


def test_workers_on_redis_are_separate_instances_serving_one_port_and_stop_together(redis_url: str) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "api"],
        env=env(WORKERS="2", BUFFER_URL=redis_url, PORT=str(port), SHUTDOWN_GRACE_S="1"),
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready: set[str] = set()
        deadline = time.monotonic() + 30 * T
        assert proc.stderr is not None
        while len(ready) < 2 and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if str(record.get("message", "")).startswith("ready:"):
                ready.add(record["instance"])
        assert len(ready) == 2, "two workers, two instance ids"
        response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5 * T)
        assert response.status_code == 200 and response.json()["instance"] in ready
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30 * T) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
