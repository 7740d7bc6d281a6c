"""Datadog APM: the server runs under ``ddtrace-run`` and its spans reach an agent.

The agent is a stand-in HTTP server that records what ddtrace sends; the server is a real
``python -m api`` process on an ephemeral port.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from testkit import T
from testkit.processes import free_port
from testkit.tcp import TcpServer


class FakeAgent(TcpServer):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line = head.split(b"\r\n", 1)[0].decode()
        length = next(
            (int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")), 0
        )
        if length:
            await reader.readexactly(length)
        self.requests.append(request_line)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()


@pytest.mark.skipif(
    shutil.which("ddtrace-run", path=str(Path(sys.executable).parent)) is None, reason="ddtrace is not installed"
)
async def test_under_ddtrace_run_request_spans_are_sent_to_the_agent_and_logs_carry_their_ids(
    tmp_path: Path,
) -> None:
    port = free_port()
    log_path = tmp_path / "server.log"
    async with FakeAgent() as agent:
        env = {
            **os.environ,
            "PORT": str(port),
            "APP_ENV": "dev",
            "DD_TRACE_ENABLED": "true",
            "DD_TRACE_AGENT_URL": f"http://127.0.0.1:{agent.port}",
            "DD_INSTRUMENTATION_TELEMETRY_ENABLED": "false",
            "DD_REMOTE_CONFIGURATION_ENABLED": "false",
            "DD_TRACE_STARTUP_LOGS": "false",
            "DD_SERVICE": "brandchat-test",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "json",
        }
        ddtrace_run = str(Path(sys.executable).parent / "ddtrace-run")
        log_file = log_path.open("wb")
        proc = await asyncio.create_subprocess_exec(
            ddtrace_run, sys.executable, "-m", "api", env=env, stdout=subprocess.DEVNULL, stderr=log_file
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                async with asyncio.timeout(20 * T):
                    while True:
                        try:
                            if (await http.get("/healthz")).status_code == 200:
                                break
                        except httpx.TransportError:
                            await asyncio.sleep(0.1)
                r = await http.post("/v1/negotiate", json={"brand": "demo"})
                assert r.status_code == 200
                sent = await http.post(
                    f"/v1/conversations/{r.json()['conversation_id']}/messages",
                    json={"client_message_id": "m1", "text": "Hello?"},
                    headers={"Authorization": f"Bearer {r.json()['token']}"},
                )
                assert sent.status_code == 202
            async with asyncio.timeout(20 * T):
                while not any("/traces" in line for line in agent.requests):
                    await asyncio.sleep(0.1)
        finally:
            proc.terminate()
            async with asyncio.timeout(30 * T):
                await proc.wait()
            log_file.close()
    assert any(
        line.startswith("PUT /v0.") or line.startswith("POST /v0.") for line in agent.requests if "/traces" in line
    )
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    accepted = [line for line in lines if line["message"].startswith("send accepted")]
    assert accepted and accepted[0]["service"] == "brandchat-test"
    assert int(accepted[0]["dd.span_id"]) > 0 and accepted[0]["dd.trace_id"] not in ("", "0")
