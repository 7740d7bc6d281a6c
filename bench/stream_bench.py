"""Streaming benchmark: N concurrent WebSocket clients, each streaming one whole reply.

Reports time to first delta (p50/p95), time to done (p50/p95) and delivered events per second for:

* ``baseline``  — a bare WebSocket endpoint that writes the offline provider's words straight to the
  socket (no log, no resume: what "token streaming directly to WebSocket" costs);
* ``memory``    — this server with the memory buffer;
* ``redis``     — this server with a real redis-server (the multi-instance setup).

Each server runs in its own process; the clients run in the benchmark process. The time to first
delta of the two real setups includes ``POST /v1/negotiate`` (the baseline has no such step).
The provider is the offline one with a fixed pace, so the numbers measure the streaming path, not
a model. Run: ``make bench`` (or ``python -m bench.stream_bench --clients 200``). Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from api.settings import PROJECT_ROOT
from llm.base import ReplyRequest
from llm.offline import OfflineProvider
from persona.demo import compose_reply
from persona.loader import load_brands
from testkit.clients import negotiate
from testkit.processes import RedisProcess, free_port

QUESTION = "How do I brew a pour-over, and how long does shipping take?"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def serve_baseline(port: int, delay_ms: int) -> None:
    """The baseline server (run in its own process): words straight from the provider to the socket."""
    brands = load_brands(PROJECT_ROOT / "brands")
    provider = OfflineProvider(compose=lambda b, m: compose_reply(brands[b], m), token_delay_ms=delay_ms)

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        await ws.receive_text()
        request = ReplyRequest(brand_id="demo", messages=[{"role": "user", "content": QUESTION}], max_tokens=512)
        seq = 0
        async for piece in await provider.open_reply(request):
            seq += 1
            if piece.text:
                await ws.send_text(json.dumps({"type": "delta", "seq": seq, "text": piece.text}))
        await ws.send_text(json.dumps({"type": "done", "seq": seq + 1}))
        await ws.close()

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


async def spawn(argv: list[str], port: int, env: dict[str, str]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        *argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=PROJECT_ROOT
    )
    async with asyncio.timeout(30):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return proc
            except OSError:
                await asyncio.sleep(0.1)


async def one_client(url: str, first_frame: dict[str, Any]) -> tuple[float, float, int]:
    started = time.perf_counter()
    first = None
    events = 0
    async with websockets.connect(url, open_timeout=30, max_size=None) as ws:
        for frame in ([{"type": "hello", "token": first_frame["token"]}] if "token" in first_frame else []) + [
            {"type": "send", "client_message_id": "m1", "text": QUESTION}
        ]:
            await ws.send(json.dumps(frame))
        async for raw in ws:
            msg = json.loads(raw)
            if msg["type"] == "delta":
                events += 1
                first = first or time.perf_counter()
            if msg["type"] in ("done", "error"):
                break
    return (first or time.perf_counter()) - started, time.perf_counter() - started, events


async def run_clients(n: int, make: Any) -> dict[str, float]:
    t0 = time.perf_counter()
    results = await asyncio.gather(*(make(i) for i in range(n)))
    wall = time.perf_counter() - t0
    ttft = [r[0] for r in results]
    total = [r[1] for r in results]
    events = sum(r[2] for r in results)
    return {
        "ttft_p50_ms": pct(ttft, 0.5),
        "ttft_p95_ms": pct(ttft, 0.95),
        "done_p50_ms": pct(total, 0.5),
        "done_p95_ms": pct(total, 0.95),
        "deltas_per_s": events / wall,
        "replies": len(results),
    }


async def main(clients: int, delay_ms: int) -> None:
    """Each server runs in its own process (its own core); the clients run here."""
    rows: dict[str, dict[str, float]] = {}
    port = free_port()
    proc = await spawn(
        [sys.executable, "-m", "bench.stream_bench", "--serve-baseline", str(port)],
        port,
        {"OFFLINE_TOKEN_DELAY_MS": str(delay_ms)},
    )
    try:
        rows["baseline (direct)"] = await run_clients(clients, lambda i: one_client(f"ws://127.0.0.1:{port}/ws", {}))
    finally:
        proc.terminate()
        await proc.wait()

    redis = RedisProcess()
    redis.start()
    try:
        for name, url in (("memory buffer", "memory://"), ("redis buffer", redis.url)):
            port = free_port()
            env = {
                "PORT": str(port),
                "BUFFER_URL": url,
                "OFFLINE_TOKEN_DELAY_MS": str(delay_ms),
                "LOG_LEVEL": "WARNING",
                "LLM_PROVIDER": "offline",
                # Every client comes from 127.0.0.1: the per-address limits would measure themselves.
                "APP_ENV": "dev",
                "RATE_NEGOTIATES_PER_MIN": "1000000",
                "RATE_REPLIES_PER_MIN": "1000000",
                "MAX_CONNECTIONS_PER_ADDRESS": "1000000",
                "MAX_RUNNING_REPLIES": "1000000",
                "MAX_RUNNING_REPLIES_PER_BRAND": "1000000",
            }
            proc = await spawn([sys.executable, "-m", "api"], port, env)
            base = f"http://127.0.0.1:{port}"
            try:

                async def client(i: int, base: str = base, port: int = port) -> tuple[float, float, int]:
                    n = await negotiate(base)
                    return await one_client(f"ws://127.0.0.1:{port}/v1/ws", n)

                rows[name] = await run_clients(clients, client)
            finally:
                proc.terminate()
                await proc.wait()
    finally:
        redis.stop()

    cols = ["ttft_p50_ms", "ttft_p95_ms", "done_p50_ms", "done_p95_ms", "deltas_per_s", "replies"]
    print(f"\n{clients} concurrent clients, offline provider at {delay_ms} ms/word, one process, loopback\n")
    print(f"{'':22}" + "".join(f"{c:>14}" for c in cols))
    for name, row in rows.items():
        print(f"{name:22}" + "".join(f"{row[c]:>14.1f}" for c in cols))
    base = rows["baseline (direct)"]
    for name in ("memory buffer", "redis buffer"):
        extra = rows[name]["ttft_p50_ms"] - base["ttft_p50_ms"]
        print(f"{name}: +{extra:.1f} ms time to first delta (p50) over direct streaming")
    print(f"median of p50s across setups: {statistics.median(r['ttft_p50_ms'] for r in rows.values()):.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--delay-ms", type=int, default=20)
    parser.add_argument("--serve-baseline", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline, int(os.environ.get("OFFLINE_TOKEN_DELAY_MS", "20")))
    else:
        asyncio.run(main(args.clients, args.delay_ms))
