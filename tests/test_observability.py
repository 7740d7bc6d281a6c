"""Logs, DogStatsD metrics (parsed off a real UDP socket), monitoring hooks, the dashboard's names."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from loguru import logger

from api.hooks import HookRegistry
from api.logs import setup_logging
from api.metrics import METRICS, TOKEN_GAP_STRIDE, DatadogMetrics, full_name
from api.settings import PROJECT_ROOT, Settings
from testkit import T
from testkit.clients import WsClient, negotiate, post_message, read_sse, ws_turn
from testkit.fake_openai import FakeOpenAI, Reply, StallBeforeHeaders, Status
from testkit.server import ServerFactory

# --- a DogStatsD agent stand-in: a UDP socket that parses what arrives ---------------------------


class StatsdListener(asyncio.DatagramProtocol):
    """Parses DogStatsD lines: ``name:value|type|#tag:v,tag:v`` (several per datagram)."""

    def __init__(self) -> None:
        self.samples: list[dict[str, Any]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        for line in data.decode().splitlines():
            match = re.fullmatch(r"([^:]+):([^|]+)\|([a-z]+)(?:\|@[\d.]+)?(?:\|#(.*))?", line)
            assert match, f"not a DogStatsD line: {line!r}"
            name, value, kind, tags = match.groups()
            tag_map = dict(t.split(":", 1) for t in (tags or "").split(",") if t)
            self.samples.append({"name": name, "value": float(value), "type": kind, "tags": tag_map})

    def names(self) -> set[str]:
        return {s["name"] for s in self.samples}

    def find(self, name: str, **tags: str) -> list[dict[str, Any]]:
        return [s for s in self.samples if s["name"] == name and all(s["tags"].get(k) == v for k, v in tags.items())]

    async def wait_for(self, name: str, timeout: float = 5.0, **tags: str) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout * T):
            while not self.find(name, **tags):
                await asyncio.sleep(0.02)
        return self.find(name, **tags)


@pytest.fixture
async def statsd() -> AsyncIterator[StatsdListener]:
    loop = asyncio.get_running_loop()
    listener = StatsdListener()
    transport, _ = await loop.create_datagram_endpoint(lambda: listener, local_addr=("127.0.0.1", 0))
    listener.transport = transport
    listener.port = transport.get_extra_info("sockname")[1]
    yield listener
    transport.close()


def metric_settings(statsd: StatsdListener, **extra: Any) -> dict[str, Any]:
    return {"dd_agent_host": "127.0.0.1", "dd_dogstatsd_port": statsd.port, "instance_id": "i-test", **extra}


# --- metrics ------------------------------------------------------------------------------------------


async def test_token_gaps_are_sent_in_batches_that_keep_the_largest_gap(statsd: StatsdListener) -> None:
    metrics = DatadogMetrics(host="127.0.0.1", port=statsd.port, instance="i-test")
    hooks = HookRegistry()
    hooks.add(metrics)
    for ms in range(1, 101):
        hooks.emit("token_gap", brand="demo", seconds=ms / 1000)
    assert statsd.find(full_name("stream.token_gap_ms")) == [], "nothing is sent per token"
    hooks.emit("stream_ended", stream_id="s", brand="demo", terminal="done", outcome="stop", seconds=1.0)
    metrics.close()
    await statsd.wait_for(full_name("stream.done"), brand="demo")
    gaps = [m["value"] for m in statsd.find(full_name("stream.token_gap_ms"), brand="demo")]
    assert len(gaps) == 100 // TOKEN_GAP_STRIDE and max(gaps) == 100


def test_a_hook_that_names_its_events_is_called_for_those_only() -> None:
    calls: list[str] = []

    def every(event: str, fields: dict[str, Any]) -> None:
        calls.append(f"every:{event}")

    def some(event: str, fields: dict[str, Any]) -> None:
        calls.append(f"some:{event}")

    some.events = frozenset({"first_token"})  # type: ignore[attr-defined]
    hooks = HookRegistry()
    hooks.add(every)
    hooks.add(some)
    hooks.emit("token_gap", brand="demo", seconds=0.1)
    hooks.emit("first_token", stream_id="s", brand="demo", seconds=0.1)
    assert calls == ["every:token_gap", "every:first_token", "some:first_token"]


async def test_a_chat_turn_emits_connection_stream_latency_and_buffer_metrics_tagged_by_brand_and_instance(
    servers: ServerFactory, statsd: StatsdListener
) -> None:
    server = await servers(**metric_settings(statsd, offline_token_delay_ms=5))
    n = await negotiate(server.base_url)
    events = await ws_turn(server.ws_url, n, "shipping?")
    assert events[-1]["type"] == "done"
    done = await statsd.wait_for(full_name("stream.done"), brand="demo", finish_reason="stop")
    assert done[0]["type"] == "c" and done[0]["tags"]["instance"] == "i-test"
    await statsd.wait_for(full_name("stream.started"), brand="demo")
    ttft = await statsd.wait_for(full_name("stream.time_to_first_token_ms"), brand="demo")
    assert ttft[0]["type"] == "h" and 0 <= ttft[0]["value"] < 5000
    gaps = await statsd.wait_for(full_name("stream.token_gap_ms"), brand="demo")
    assert len(gaps) >= 5  # one per TOKEN_GAP_STRIDE gaps between upstream pieces, sent when the stream ends
    await statsd.wait_for(full_name("stream.duration_ms"), brand="demo", terminal="done")
    opened = await statsd.wait_for(full_name("connections.active"), transport="websocket", brand="demo")
    assert opened[0]["type"] == "g" and opened[0]["value"] == 1
    async with asyncio.timeout(5 * T):
        while statsd.find(full_name("connections.active"), transport="websocket")[-1]["value"] != 0:
            await asyncio.sleep(0.02)
    # A send's claim of its client_message_id is timed with create_stream: one step since session 4.
    for op in ("create_stream", "add_turn", "append", "read_after"):
        await statsd.wait_for(full_name("buffer.latency_ms"), op=op, backend="memory")


async def test_resumes_downgrades_cancels_and_slow_consumers_are_counted(
    servers: ServerFactory, statsd: StatsdListener
) -> None:
    server = await servers(**metric_settings(statsd, offline_token_delay_ms=40))
    n = await negotiate(server.base_url, failed=["websocket"])
    await statsd.wait_for(full_name("transport.downgrade"), transport="websocket", reason="client_reported")
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        await client.send({"type": "send", "client_message_id": "m1", "text": "shipping?"})
        stream_id = (await client.recv())["stream_id"]
        await client.recv_until(lambda f: f.get("seq", 0) >= 3)
    reader = await read_sse(server.base_url, stream_id, n["token"], after_seq=3, stop_after=1)
    assert reader.events
    resume = await statsd.wait_for(full_name("resume.count"), transport="sse")
    assert resume[0]["type"] == "c"
    await statsd.wait_for(full_name("resume.events_replayed"), transport="sse")
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.post(f"/v1/streams/{stream_id}/cancel", headers={"Authorization": f"Bearer {n['token']}"})
        assert r.status_code == 202
    await statsd.wait_for(full_name("stream.cancelled"), brand="demo")
    # A resume of the finished stream from seq 1 replays everything after it.
    whole = await read_sse(server.base_url, stream_id, n["token"], after_seq=1)
    replayed = await statsd.wait_for(full_name("resume.events_replayed"), transport="sse")
    async with asyncio.timeout(5 * T):
        while len(replayed) < 2:
            replayed = statsd.find(full_name("resume.events_replayed"), transport="sse")
            await asyncio.sleep(0.02)
    assert replayed[-1]["value"] == len(whole.events)


async def test_a_websocket_slow_consumer_is_counted(servers: ServerFactory, statsd: StatsdListener) -> None:
    server = await servers(**metric_settings(statsd, outbox_max_frames=1, offline_token_delay_ms=0))
    n = await negotiate(server.base_url)
    r = await post_message(server.base_url, n, "shipping?")
    stream_id = r.json()["stream_id"]
    async with asyncio.timeout(5 * T):
        while server.runtime.manager.running:
            await asyncio.sleep(0.01)
    # Replaying a whole finished stream at once overflows a one-frame outbox: the server gives up on us.
    async with WsClient.connect(server.ws_url, n["token"]) as client:
        await client.send({"type": "resume", "stream_id": stream_id, "after_seq": 0})
        with pytest.raises(Exception, match="1013"):
            await client.recv_until(lambda f: False, timeout=5)
    await statsd.wait_for(full_name("connection.slow_consumer"), transport="websocket")


async def test_upstream_errors_stalls_retries_errors_and_fallbacks_are_counted(
    servers_on_fake: ServerFactory, statsd: StatsdListener, fake: FakeOpenAI
) -> None:
    server = await servers_on_fake(**metric_settings(statsd, upstream_connect_timeout_s=0.3))
    fake.enqueue(Status(503), Status(503), StallBeforeHeaders(), StallBeforeHeaders())
    n = await negotiate(server.base_url)
    events = await ws_turn(server.ws_url, n, "hello")
    assert events[-1]["type"] == "error"
    await statsd.wait_for(full_name("upstream.error"), brand="demo", code="upstream_error", status="503")
    await statsd.wait_for(full_name("upstream.retry"), brand="demo", code="upstream_error")
    await statsd.wait_for(full_name("stream.error"), brand="demo", code="upstream_error")
    n = await negotiate(server.base_url, brand="fallback-demo")
    events = await ws_turn(server.ws_url, n, "hello")
    assert events[-1]["finish_reason"] == "fallback"
    await statsd.wait_for(full_name("upstream.stall"), brand="fallback-demo")
    await statsd.wait_for(full_name("stream.fallback"), brand="fallback-demo")


async def test_with_metrics_off_no_client_and_no_timing_wrapper_exist(servers: ServerFactory) -> None:
    server = await servers()
    assert server.runtime.metrics is None
    assert type(server.runtime.buffer).__name__ == "MemoryBuffer"


# --- the dashboard ------------------------------------------------------------------------------------

DATADOG_DIR = PROJECT_ROOT / "deploy" / "datadog"


HISTOGRAM_SUFFIXES = (".avg", ".median", ".max", ".count", ".95percentile")


def metric_names_in(path: Path) -> set[str]:
    """Metric names a Datadog JSON file queries; a histogram's derived series count as the histogram."""
    names = set()
    for name in re.findall(r"brandchat\.[a-z_0-9]+(?:\.[a-z_0-9]+)*", path.read_text()):
        for suffix in HISTOGRAM_SUFFIXES:
            base = name.removesuffix(suffix)
            if base != name and METRICS.get(base.removeprefix("brandchat."), ("",))[0] == "histogram":
                name = base
        names.add(name)
    return names


@pytest.mark.parametrize("file", ["dashboard.json", "monitors.json"])
def test_the_dashboard_and_monitors_use_only_metrics_the_code_emits(file: str) -> None:
    path = DATADOG_DIR / file
    json.loads(path.read_text())  # valid JSON
    used = metric_names_in(path)
    assert used, f"{file} names no metric"
    emitted = {full_name(name) for name in METRICS}
    assert used <= emitted, f"unknown metrics in {file}: {sorted(used - emitted)}"


def test_every_metric_the_code_emits_is_on_the_dashboard() -> None:
    emitted = {full_name(name) for name in METRICS}
    missing = emitted - metric_names_in(DATADOG_DIR / "dashboard.json")
    assert not missing, f"metrics without a dashboard widget: {sorted(missing)}"


# --- logs ---------------------------------------------------------------------------------------------


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()  # not a terminal: JSON lines
    setup_logging(instance="i-logtest", stream=stream)
    yield stream
    logger.remove()
    logger.add(sys.stderr)
    logging.basicConfig(handlers=[], force=True)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_logs_are_json_lines_with_the_stream_context_and_never_the_user_text(
    servers: ServerFactory, captured_logs: io.StringIO
) -> None:
    server = await servers(offline_token_delay_ms=2)
    n = await negotiate(server.base_url)
    secret_question = "my card number is 4111 1111 1111 1111, what about shipping?"
    events = await ws_turn(server.ws_url, n, secret_question)
    stream_id = events[0]["stream_id"]
    await read_sse(server.base_url, stream_id, n["token"], after_seq=2)
    lines = records(captured_logs)
    assert all(line.get("instance") for line in lines)
    # The whole card number, spaces included: four digits alone also turn up in timestamps (regression:
    # "…:31.564111" made this test fail now and then).
    assert "4111 1111 1111 1111" not in captured_logs.getvalue()
    assert "card number" not in captured_logs.getvalue()
    about_stream = [line for line in lines if line.get("stream_id") == stream_id]
    messages = " | ".join(line["message"] for line in about_stream)
    for lifecycle in ("send accepted", "first token", "stream ended", "resume after seq 2"):
        assert lifecycle in messages, f"{lifecycle!r} not logged for the stream: {messages}"
    ws_lines = [line for line in lines if line.get("transport") == "websocket"]
    assert {"connect", "hello accepted"} <= {line["message"] for line in ws_lines}
    assert any(line["message"].startswith("disconnect") for line in ws_lines)
    assert all(line["conversation_id"] == n["conversation_id"] for line in ws_lines if "conversation_id" in line)


def test_stdlib_logging_is_routed_into_loguru(captured_logs: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").warning("from the standard library")
    lines = records(captured_logs)
    assert lines[-1]["message"] == "from the standard library"
    assert lines[-1]["logger"] == "uvicorn.error" and lines[-1]["status"] == "warning"


def test_a_json_line_has_the_attributes_datadog_reads(captured_logs: io.StringIO) -> None:
    settings = Settings(app_env="staging", dd_version="1.2.3", session_secret="s" * 40)
    setup_logging(instance="i-logtest", stream=captured_logs, tags=settings.log_tags)
    logger.bind(stream_id="s_1").error("it broke")
    line = records(captured_logs)[-1]
    assert {k: line[k] for k in ("status", "message", "service", "env", "version", "stream_id")} == {
        "status": "error",
        "message": "it broke",
        "service": "brandchat",
        "env": "staging",
        "version": "1.2.3",
        "stream_id": "s_1",
    }
    assert datetime.fromisoformat(line["timestamp"]).utcoffset() is not None
    assert "time" not in line and "level" not in line
    assert "dd.trace_id" not in line  # no ddtrace in this process: test_apm.py runs it


# --- hooks --------------------------------------------------------------------------------------------

RECORDED: list[tuple[str, dict[str, Any]]] = []


def recording_hook(event: str, fields: dict[str, Any]) -> None:
    RECORDED.append((event, dict(fields)))


def exploding_hook(event: str, fields: dict[str, Any]) -> None:
    raise RuntimeError("a broken monitoring plug-in")


async def test_hooks_from_settings_see_the_lifecycle_and_a_failing_hook_breaks_nothing(
    servers: ServerFactory,
) -> None:
    RECORDED.clear()
    server = await servers(hooks=["tests.test_observability:exploding_hook", "tests.test_observability:recording_hook"])
    n = await negotiate(server.base_url)
    events = await ws_turn(server.ws_url, n, "shipping?")
    assert events[-1]["type"] == "done"
    async with asyncio.timeout(5 * T):
        while "connection_closed" not in [e for e, _ in RECORDED]:
            await asyncio.sleep(0.02)
    seen = [event for event, _ in RECORDED]
    for expected in ("connection_opened", "stream_started", "first_token", "stream_ended", "connection_closed"):
        assert expected in seen
    ended = next(fields for event, fields in RECORDED if event == "stream_ended")
    assert ended["stream_id"] == events[0]["stream_id"] and ended["outcome"] == "stop"


def test_a_hook_path_that_cannot_be_loaded_fails_start_up_with_its_name() -> None:
    from api.hooks import load_hook

    with pytest.raises(ValueError, match="no_such_module"):
        load_hook("no_such_module:hook")
    with pytest.raises(ValueError, match="must look like"):
        load_hook("just_a_name")


async def test_guardrail_fallbacks_and_off_topic_replies_are_counted_by_rule(
    servers_on_fake: ServerFactory, statsd: StatsdListener, fake: FakeOpenAI
) -> None:
    server = await servers_on_fake(**metric_settings(statsd))
    fake.enqueue(
        Reply(text="As an AI language model, I cannot taste coffee. Our beans ship Mondays."),
        Reply(
            text="The capital of France is Paris. Its museums, boulevards, bridges and cathedrals attract "
            "millions of tourists, historians and painters every single summer."
        ),
    )
    n = await negotiate(server.base_url)
    events = await ws_turn(server.ws_url, n, "tell me about your beans")
    assert events[-1]["finish_reason"] == "fallback"
    fallback = await statsd.wait_for(full_name("guard.fallback"), brand="demo")
    assert fallback[0]["tags"]["rule"]
    events = await ws_turn(server.ws_url, n, "which beans do you roast?", cmid="m2")
    assert events[-1]["type"] == "done"
    await statsd.wait_for(full_name("guard.off_topic"), brand="demo")
