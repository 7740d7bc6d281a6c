"""Containers of the app image, run with podman for the image checks (``make image-test``).

Each container shares the host's network (``--network host``) and listens on its own ``PORT``, so
the tests reach it on 127.0.0.1 as they reach a local uvicorn, and it reaches the tests' own
``redis-server`` the same way: no port publishing, no container network (the simplest setup that
works in this sandbox, where only ``runc`` runs containers; docs/deploy.md "Building the image").
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time

import httpx

from testkit import T

IMAGE = os.environ.get("IMAGE", "localhost/brandchat:test")
"""The image under test: the tag ``deploy/image/build.sh`` gives it unless ``IMAGE`` says otherwise."""
RUNTIME = os.environ.get("PODMAN_RUNTIME", "runc")


def podman(*args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``podman ARGS`` with a deadline; its output as text."""
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout * T, check=check)


def podman_available() -> bool:
    return shutil.which("podman") is not None


def image_exists(image: str = IMAGE) -> bool:
    return podman_available() and podman("image", "exists", image, check=False).returncode == 0


class AppContainer:
    """One container of the app image on the host's network, listening on ``port``.

    ``command`` replaces the image's ``CMD`` (the healthcheck test runs one that never listens).
    :meth:`stop` is ``podman stop`` (SIGTERM, the image's ``STOPSIGNAL``, then SIGKILL after
    ``timeout_s``), as an orchestrator stops a container; :meth:`remove` deletes it whatever its state.
    """

    def __init__(self, port: int, env: dict[str, str], *, image: str = IMAGE, command: list[str] | None = None) -> None:
        self.port = port
        self.image = image
        self.env = {"PORT": str(port), **env}
        self.command = command or []
        self.name = f"brandchat-test-{secrets.token_hex(4)}"
        self.started = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True, timeout: float = 60.0) -> None:
        """``podman run -d``; with ``wait``, until ``/healthz`` answers 200 (at most ``timeout`` seconds)."""
        env_args = [arg for key, value in self.env.items() for arg in ("--env", f"{key}={value}")]
        podman("run", "--detach", "--runtime", RUNTIME, "--network", "host", "--name", self.name, *env_args, self.image,
               *self.command)  # fmt: skip
        self.started = True
        if wait:
            self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout * T
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"container {self.name} exited during start-up:\n{self.logs()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/healthz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"container {self.name} did not answer /healthz in {timeout * T:.0f} s:\n{self.logs()}")

    def running(self) -> bool:
        return self.inspect("{{.State.Running}}") == "true"

    def inspect(self, template: str) -> str:
        return podman("inspect", "--format", template, self.name).stdout.strip()

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        """A command in the running container, as the image's user."""
        return podman("exec", self.name, *command, check=False)

    def healthcheck(self) -> int:
        """``podman healthcheck run``: 0 healthy, 1 unhealthy (the image's own HEALTHCHECK command)."""
        return podman("healthcheck", "run", self.name, check=False).returncode

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def stop(self, timeout_s: int = 30) -> None:
        podman("stop", "--time", str(timeout_s), self.name, timeout=timeout_s + 30.0, check=False)

    def remove(self) -> None:
        if self.started:
            podman("rm", "--force", "--time", "0", self.name, check=False)
            self.started = False
