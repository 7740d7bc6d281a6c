from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis

from testkit import T
from testkit.fake_openai import FakeOpenAI
from testkit.faults import InstanceFactory, InstanceProcess, RedisFactory
from testkit.processes import RedisProcess
from testkit.server import RunningServer, ServerFactory, server_pool


@pytest.fixture(scope="session")
def redis_proc() -> Iterator[RedisProcess]:
    proc = RedisProcess()
    proc.start()
    yield proc
    proc.stop()


FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember whether a test failed, so fixtures can add what explains it (instance logs)."""
    report = yield
    if report.failed:
        item.stash[FAILED] = True
    return report


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


@pytest.fixture
def redis_servers() -> Iterator[RedisFactory]:
    """Redis servers for fault tests (the session's shared one must not be killed); stopped after the test."""
    started: list[RedisProcess] = []

    def factory(*, persistent: bool = False) -> RedisProcess:
        proc = RedisProcess(persistent=persistent)
        started.append(proc)
        proc.start()
        return proc

    yield factory
    for proc in started:
        proc.stop()


@pytest.fixture
async def instances(request: pytest.FixtureRequest, redis_servers: RedisFactory) -> AsyncIterator[InstanceFactory]:
    """Server instances as real processes (``python -m api``); every one is killed after the test (before
    the test's own Redis servers stop), and when the test failed the tail of each one's log is printed."""
    started: list[InstanceProcess] = []

    async def factory(buffer_url: str, instance_id: str, **env: str | float | int) -> InstanceProcess:
        instance = InstanceProcess(buffer_url, instance_id, **env)
        started.append(instance)
        return await instance.start()

    yield factory
    failed = request.node.stash.get(FAILED, False)
    for instance in started:
        state = repr(instance)
        instance.close()
        if failed:
            print(f"--- {state}: last lines of its log ({instance.log_path}) ---\n{instance.tail(60)}")
