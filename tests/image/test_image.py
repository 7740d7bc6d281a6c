"""The built image, run as containers (``make image-test``, which builds it first; not in ``make test``).

Everything here runs against ``podman run`` of the image under test: the app as the image starts it
(production settings, a real ``SESSION_SECRET``, the offline provider), its user, its HEALTHCHECK,
and two containers plus a real Redis behind ``deploy/nginx.conf`` resuming a reply across containers.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Iterator

import httpx
import pytest
import websockets

from api.settings import PROJECT_ROOT
from deploy.cluster import DeployNginx
from persona.demo import compose_answer
from persona.loader import load_brand
from testkit import T
from testkit.clients import WsClient, assert_well_formed, joined_text, negotiate, post_message, read_sse, ws_turn
from testkit.containers import IMAGE, AppContainer, image_exists, podman
from testkit.processes import RedisProcess, free_port

QUESTION = "How do I brew a pour-over, and how long does shipping take?"
SECRET = secrets.token_urlsafe(48)

pytestmark = [pytest.mark.image, pytest.mark.timeout(300)]


@pytest.fixture(scope="module", autouse=True)
def built_image() -> None:
    assert image_exists(), f"no image {IMAGE} in podman's storage: `make image-test` builds it first"


def expected_answer() -> str:
    return compose_answer(load_brand(PROJECT_ROOT / "brands" / "demo.yaml"), QUESTION)


@pytest.fixture(scope="module")
def app() -> Iterator[AppContainer]:
    """One container on the image's defaults: memory buffer, offline provider, production mode."""
    container = AppContainer(free_port(), {"SESSION_SECRET": SECRET})
    try:
        container.start()
        yield container
    finally:
        container.remove()


async def test_healthz_answers_from_the_container(app: AppContainer) -> None:
    async with httpx.AsyncClient(base_url=app.base_url, timeout=5 * T) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_a_reply_streams_over_websocket_from_the_container(app: AppContainer) -> None:
    n = await negotiate(app.base_url)
    events = await ws_turn(f"ws://127.0.0.1:{app.port}/v1/ws", n, QUESTION, timeout=30)
    assert_well_formed(events)
    assert [e["type"] for e in events].count("delta") > 3, "the reply should arrive in pieces"
    assert joined_text(events) == events[-1]["text"] == expected_answer()


async def test_a_reply_streams_over_sse_from_the_container(app: AppContainer) -> None:
    n = await negotiate(app.base_url)
    response = await post_message(app.base_url, n, QUESTION)
    assert response.status_code in (200, 202), response.text
    reader = await read_sse(app.base_url, response.json()["stream_id"], n["token"], after_seq=0, timeout=30)
    assert reader.headers["content-type"].startswith("text/event-stream")
    events = [e.data for e in reader.events]
    assert_well_formed(events)
    assert joined_text(events) == events[-1]["text"] == expected_answer()


def test_the_app_runs_as_a_non_root_user(app: AppContainer) -> None:
    assert podman("image", "inspect", "--format", "{{.Config.User}}", IMAGE).stdout.strip() == "app"
    # The server process itself (PID 1 in the container), not just what `exec` would get.
    status = app.exec("cat", "/proc/1/status").stdout
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids == ["10001"] * 4, status
    assert app.exec("id", "-un").stdout.strip() == "app"
    # It cannot write where the code lives; the brand files are its own.
    assert app.exec("touch", "/opt/venv/bin/x").returncode != 0


def _pins(text: str) -> set[str]:
    """``name==version`` lines, names normalised (PEP 503), without the installer's own packages."""
    pins = {re.sub(r"[-_.]+", "-", name.lower()) + "==" + version for name, version in PIN.findall(text)}
    return {pin for pin in pins if pin.split("==")[0] not in ("pip", "setuptools", "wheel")}


PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", re.MULTILINE)


def test_the_image_holds_exactly_the_locked_dependencies(app: AppContainer) -> None:
    frozen = app.exec("pip", "freeze", "--exclude-editable", "--exclude", "brandchat").stdout
    assert _pins(frozen) == _pins((PROJECT_ROOT / "requirements.lock").read_text())


def test_the_image_healthcheck_passes_while_the_app_serves(app: AppContainer) -> None:
    # Docker-format image: the HEALTHCHECK survived the build (OCI images drop it).
    healthcheck = json.loads(podman("image", "inspect", "--format", "{{json .Config.Healthcheck}}", IMAGE).stdout)
    assert healthcheck and "/healthz" in " ".join(healthcheck["Test"])
    assert app.healthcheck() == 0
    assert app.inspect("{{.State.Health.Status}}") == "healthy"


def test_the_image_healthcheck_fails_when_nothing_answers() -> None:
    # The same image, with a command that never listens: the check must say so, not pass regardless.
    idle = AppContainer(free_port(), {}, command=["python", "-c", "import time; time.sleep(120)"])
    try:
        idle.start(wait=False)
        assert idle.healthcheck() == 1
    finally:
        idle.remove()


@pytest.fixture
def cluster() -> Iterator[tuple[DeployNginx, list[AppContainer]]]:
    """Two containers sharing a real ``redis-server`` behind nginx with ``deploy/nginx.conf``."""
    redis = RedisProcess()
    redis.start()
    containers = [
        AppContainer(
            free_port(),
            {
                "SESSION_SECRET": SECRET,
                "BUFFER_URL": redis.url,
                "INSTANCE_ID": f"container-{name}",
                "TRUSTED_PROXIES": "127.0.0.1",  # nginx on this host names the client
                "OFFLINE_TOKEN_DELAY_MS": "60",  # slow enough to stop a container mid-reply
                "SHUTDOWN_GRACE_S": "5",
            },
        )
        for name in "ab"
    ]
    nginx = DeployNginx(free_port(), [c.port for c in containers])
    try:
        for container in containers:
            container.start()
        nginx.start()
        yield nginx, containers
    finally:
        nginx.stop()
        for container in containers:
            container.remove()
        redis.stop()


async def test_a_reply_resumes_on_the_other_container_when_its_container_is_stopped(
    cluster: tuple[DeployNginx, list[AppContainer]],
) -> None:
    nginx, containers = cluster
    base, ws_url = f"http://127.0.0.1:{nginx.port}", f"ws://127.0.0.1:{nginx.port}/v1/ws"
    n = await negotiate(base)
    async with WsClient.connect(ws_url, n["token"]) as client:
        await client.send({"type": "send", "client_message_id": "m1", "text": QUESTION})
        stream_id = (await client.recv())["stream_id"]
        first = await client.recv_until(lambda f: f["type"] == "delta" and f["seq"] >= 3)
        # nginx chose one container for the WebSocket (round robin): its log has the connection.
        logs = [await asyncio.to_thread(c.logs) for c in containers]
        serving = [c for c, log in zip(containers, logs, strict=True) if "hello accepted" in log]
        assert len(serving) == 1, logs
        stopping = asyncio.create_task(asyncio.to_thread(serving[0].stop, 30))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                frame = await client.recv(timeout=30)
                if frame["type"] != "ping":
                    first.append(frame)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    first = [f for f in first if "seq" in f]
    assert first[-1]["type"] not in ("done", "error"), "the reply should still be running when its container stops"
    # Reconnect through the load balancer: only the other container can answer now.
    async with WsClient.connect(ws_url, n["token"]) as client:
        await client.send({"type": "resume", "stream_id": stream_id, "after_seq": first[-1]["seq"]})
        rest = await client.stream(stream_id, timeout=60)
    events = first + rest
    assert_well_formed(events)
    assert joined_text(events) == events[-1]["text"] == expected_answer()
    async with asyncio.timeout(60 * T):
        await stopping
    assert not serving[0].running()
    other = next(c for c in containers if c is not serving[0])
    assert "hello accepted" in await asyncio.to_thread(other.logs)
