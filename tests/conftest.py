from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from testkit.processes import RedisProcess
from testkit.server import RunningServer, ServerFactory, server_pool


@pytest.fixture(scope="session")
def redis_proc() -> Iterator[RedisProcess]:
    proc = RedisProcess()
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def redis_url(redis_proc: RedisProcess) -> str:
    """A clean Redis database for one test (sync, so async fixtures may request it too)."""
    client = redis.Redis.from_url(redis_proc.url)
    client.flushdb()
    client.close()
    return redis_proc.url


@pytest.fixture
async def servers() -> AsyncIterator[ServerFactory]:
    """Start real uvicorn servers on ephemeral ports; all are stopped after the test."""
    async with server_pool() as factory:
        yield factory


@pytest.fixture
async def server(servers: ServerFactory) -> RunningServer:
    """One server on embedded defaults (memory buffer, offline provider, fast token pace)."""
    return await servers()
