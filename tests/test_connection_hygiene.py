"""Connection hygiene (issue 11, item 7; docs/security.md): uvicorn's deadlines and caps as
``api/server.py`` sets them, and nginx's, against real servers.

Finding pinned: "Slowloris on uvicorn directly; no connection caps in the app or nginx."
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from deploy.cluster import NginxProcess, nginx_binary, render_nginx_conf
from testkit import T
from testkit.clients import WsClient, negotiate
from testkit.processes import free_port
from testkit.server import RunningServer, ServerFactory

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 0.5


async def closed_by_server_within(reader: asyncio.StreamReader, seconds: float) -> tuple[bool, bytes]:
    """Read until the server closes the connection; (closed in time, what it sent)."""
    got = b""
    try:
        async with asyncio.timeout(seconds):
            while chunk := await reader.read(4096):
                got += chunk
    except TimeoutError:
        return False, got
    except ConnectionResetError:
        pass
    return True, got


async def healthy(server: RunningServer) -> bool:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
        return (await http.get("/healthz")).status_code == 200


async def test_a_client_that_trickles_its_headers_is_disconnected_at_the_header_deadline(
    servers: ServerFactory,
) -> None:
    server = await servers(http_header_timeout_s=DEADLINE_S)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = time.monotonic()
    for line in (b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"X-a: 1\r\n"):
        writer.write(line)
        await writer.drain()
        await asyncio.sleep(DEADLINE_S / 4)
    closed, _ = await closed_by_server_within(reader, 3 * T)
    writer.close()
    assert closed, "slowloris: the server kept a connection whose headers never ended"
    assert time.monotonic() - started < DEADLINE_S + 2 * T
    assert await healthy(server)


async def test_a_connection_that_sends_nothing_is_closed_and_a_prompt_request_is_served(
    servers: ServerFactory,
) -> None:
    server = await servers(http_header_timeout_s=DEADLINE_S)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    closed, _ = await closed_by_server_within(reader, 3 * T)
    writer.close()
    assert closed
    # A request whose headers come at once is unaffected, and so is the keep-alive request after it.
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http:
        assert (await http.get("/healthz")).status_code == 200
        await asyncio.sleep(DEADLINE_S * 0.5)
        assert (await http.get("/healthz")).status_code == 200


async def test_a_client_that_trickles_its_body_is_answered_400_at_the_body_deadline(servers: ServerFactory) -> None:
    server = await servers(http_body_timeout_s=DEADLINE_S)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"POST /v1/negotiate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    await writer.drain()
    closed, answer = await closed_by_server_within(reader, 3 * T)
    writer.close()
    assert closed and answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b'"bad_request"' in answer
    assert await healthy(server)


async def test_an_idle_keep_alive_connection_is_closed_after_http_keep_alive_s(servers: ServerFactory) -> None:
    server = await servers(http_keep_alive_s=1)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    closed, answer = await closed_by_server_within(reader, 4 * T)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200") and closed


async def test_past_http_max_concurrency_new_requests_get_503(servers: ServerFactory) -> None:
    server = await servers(http_max_concurrency=3)
    n = await negotiate(server.base_url)
    token = n["token"]
    async with (
        WsClient.connect(server.ws_url, token),
        WsClient.connect(server.ws_url, token),
        WsClient.connect(server.ws_url, token),
        httpx.AsyncClient(base_url=server.base_url, timeout=5 * T) as http,
    ):
        refused = await http.get("/healthz")
    assert refused.status_code == 503
    assert await healthy(server)


# --- nginx ----------------------------------------------------------------------------------------------

LIMIT_DIRECTIVES = (
    "limit_conn_zone",
    "limit_req_zone",
    "limit_conn_status",
    "limit_req_status",
    "client_header_timeout",
    "client_body_timeout",
    "client_max_body_size",
    "large_client_header_buffers",
    "keepalive_timeout",
    "send_timeout",
    "limit_conn",
    "limit_req",
)


def directives(conf: str) -> dict[str, str]:
    found = {}
    for name, value in re.findall(r"^\s*([a-z_]+)\s+([^;{]*);", conf, re.MULTILINE):
        found[name] = " ".join(value.split())
    return found


def test_compose_nginx_and_the_cluster_template_set_the_same_limits() -> None:
    compose = directives((ROOT / "deploy" / "nginx.conf").read_text())
    template = directives(render_nginx_conf("127.0.0.1:1", [2], Path("/tmp")).replace("{{", "{").replace("}}", "}"))
    for name in LIMIT_DIRECTIVES:
        assert name in compose and name in template, name
        assert compose[name] == template[name], name


def _nginx_available() -> bool:
    try:
        nginx_binary()
    except RuntimeError:
        return False
    return True


@pytest.mark.skipif(not _nginx_available(), reason="nginx is not installed here (CI installs it: .ci/run)")
def test_nginx_accepts_the_cluster_template() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="nginx-t-"))
    conf = tmp / "nginx.conf"
    conf.write_text(render_nginx_conf(f"127.0.0.1:{free_port()}", [free_port()], tmp))
    result = subprocess.run(
        [nginx_binary(), "-t", "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "error.log")],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()


@pytest.mark.skipif(not _nginx_available(), reason="nginx is not installed here (CI installs it: .ci/run)")
async def test_behind_nginx_a_body_over_its_limit_is_413_before_it_reaches_an_instance(
    server: RunningServer,
) -> None:
    nginx = NginxProcess(free_port(), [server.port])
    await asyncio.to_thread(nginx.start)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{nginx.port}", timeout=5 * T) as http:
            ok = await http.post("/v1/negotiate", json={"brand": "demo"})
            refused = await http.post("/v1/negotiate", content=b"{" + b" " * 300_000 + b"}")
    finally:
        await asyncio.to_thread(nginx.stop)
    assert ok.status_code == 200
    assert refused.status_code == 413
