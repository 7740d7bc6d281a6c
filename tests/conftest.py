from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis

from testkit import T
from testkit.fake_openai import FakeOpenAI
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


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    """A fake OpenAI-compatible server; an exception inside it (a bug in the fake) fails the test."""
    async with FakeOpenAI() as server:
        yield server
        assert server.errors == []


@pytest.fixture
def servers_on_fake(fake: FakeOpenAI, servers: ServerFactory) -> ServerFactory:
    """Start servers whose model provider is ``fake`` (``factory(**settings)`` overrides), ready when returned.

    Requests ``fake`` before ``servers`` so that teardown stops the servers first, then the fake."""

    async def factory(**overrides: Any) -> RunningServer:
        settings = {"llm_provider": "openai", "openai_api_key": "test", "openai_base_url": fake.base_url, **overrides}
        server = await servers(**settings)
        # Like a load balancer, send traffic only once /readyz says so. Its provider check
        # (GET /v1/models) also warms the SDK client, whose first request is slow on a busy machine.
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
            response = await http.get("/readyz")
        assert response.status_code == 200, response.text
        await fake.wait_for_open_connections(0, timeout=2 * T)
        return server

    return factory
