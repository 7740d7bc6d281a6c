"""The shipped Redis configuration (deploy/redis.conf), loaded by a real redis-server: append-only
persistence with fsync every second, and a memory cap that refuses writes instead of evicting."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import redis
import yaml

from testkit import T
from testkit.processes import free_port, redis_server_binary

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "deploy" / "redis.conf"


def test_the_shipped_redis_config_persists_every_second_and_never_evicts() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        proc = subprocess.Popen(
            [redis_server_binary(), str(CONF), "--port", str(port), "--bind", "127.0.0.1", "--dir", data],
            stdout=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(port=port, socket_connect_timeout=5 * T)
            for _ in range(100):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            config = client.config_get("*")
            assert config["appendonly"] == "yes"
            assert config["appendfsync"] == "everysec"
            assert config["maxmemory-policy"] == "noeviction"
            assert int(config["maxmemory"]) > 0
            client.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_compose_and_the_local_cluster_both_run_redis_with_that_file() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    redis_service = compose["services"]["redis"]
    assert any(v.startswith("./deploy/redis.conf:") for v in redis_service["volumes"])
    assert redis_service["command"][1] == "/usr/local/etc/redis/redis.conf"
    assert "str(REDIS_CONF)" in (ROOT / "deploy" / "cluster.py").read_text()
