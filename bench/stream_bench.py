"""``make bench``: this server against the naive relay it replaces, side by side, in one run.

Systems (each its own process, pinned to core 0 when the machine has two or more; the load
generator, the fake upstream and ``redis-server`` share the other cores):

* ``naive``        FastAPI + the ``openai`` SDK, each chunk straight to the socket: no buffer, no
                   guard, no resume (what a client runs today);
* ``floor``        the same relay reading the model off a bare asyncio socket (no SDK, no HTTP
                   client library, no error handling): a reference for the least any relay on
                   FastAPI/uvicorn spends per word, not a product;
* ``memory``       this server on the memory buffer, guard on and off;
* ``redis``        this server on a real ``redis-server``, guard on and off;

each over WebSocket and SSE, against testkit's fake OpenAI-compatible upstream
(:class:`testkit.fake_openai.FakeOpenAI`, run in this process) sending one word every 50 ms
(20 words/s) after a time to first token of ``--ttft-ms`` (300), each message a different question.
Every reply is unique (``Ref<n>`` then ordinary words), and the fake notes when it wrote each word,
so **lateness** = when the word reached the client minus when the upstream sent it; a zero-cost
relay scores 0. Reported per system: p50/p99 lateness over every word, first-word lateness p50 (the
first-word overhead), failures (errors, timeouts, wrong text), and server CPU µs per delivered word
(the server process's own user+system time, plus ``redis-server``'s on Redis).
Then the idle cost: server memory per open WebSocket and SSE connection, with heartbeats.
Each server (the naive relay too) first streams ``--warmup`` replies (20, and at least one per client,
all at once, so connection pools have grown to the measured concurrency) that are not measured, so
that one-off costs of a fresh process (lazy imports, first-use caches, connection pools) are not
charged to the words of whichever row runs first.

``--quick`` (fewer clients, shorter replies, 200 idle connections) finishes in under two minutes.
Loopback only; every run is bounded in clients, replies and time.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import os
import platform
import re
import resource
import ssl
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import redis.asyncio as aioredis
import uvicorn
import websockets
from fastapi import FastAPI, WebSocket
from fastapi.responses import StreamingResponse

from api.settings import PROJECT_ROOT
from llm.wire import ChunkedDecoder
from testkit.fake_openai import FakeOpenAI, Reply, Scenario
from testkit.processes import RedisProcess, free_port

QUESTION = "How long does shipping take, and how should I brew the beans?"
_ASKED = itertools.count(1)


def question() -> str:
    """Each message a question of its own (real customers do not repeat one another word for word), so
    whatever the server caches per question is paid as real traffic pays it."""
    return f"Order {next(_ASKED)}: {QUESTION}"


WORD_DELAY_S = 0.05  # 20 words/s
CORPUS = " ".join(
    [
        "We roast on Mondays and Thursdays and ship within a day of roasting, so your beans leave the",
        "roastery fresh. Orders over thirty five dollars ship free in the US and tracking lands in your",
        "inbox the moment the bag is on its way. For pour-over, start with fifteen grams of coffee to two",
        "hundred and fifty grams of water just off the boil, a medium-fine grind and a three-minute brew.",
    ]
).split()
REF = re.compile(r"Ref(\d+) ")
CLIENT_TIMEOUT_S = 120.0
# One TLS context for every client's httpx.AsyncClient (loopback, plain HTTP: never used to verify anything).
# Each AsyncClient otherwise loads the CA bundle, ~25 ms of the load core per simulated client: 5 s at the start
# of every 200-client row, holding the load side's event loop (and so the clients' arrival times) in 25 ms lumps.
TLS = ssl.create_default_context()
SERVER_START_TIMEOUT_S = 30.0


def reply_text(rid: int, words: int) -> str:
    return " ".join([f"Ref{rid}", *(CORPUS[i % len(CORPUS)] for i in range(words - 1))]) + "."


def reply_seconds(words: int, ttft_ms: float) -> float:
    """How long the fake model takes to stream one reply."""
    return ttft_ms / 1000 + words * WORD_DELAY_S


def word_ends(text: str) -> list[int]:
    """Offset just after each word of ``text``: a word has arrived when the client has that much."""
    return [m.end() for m in re.finditer(r"\S+", text)]


def guard_holds(replies: int, words: int) -> list[float]:
    """The lateness the guard's own holds give each word, with no server and no CPU cost: the bench's
    replies fed to :class:`persona.guard.BrandGuard` piece by piece as the fake streams them
    (``split_words``), with the context the server gives the first message of a conversation (the question,
    the knowledge its prompt picks). A word released with piece ``r`` that came in piece ``i`` is
    ``(r - i) x WORD_DELAY_S`` late; what is left at the end goes out with the last piece. A held word waits
    for the pieces that show it is not the start of a violation (a multi-word fact is held whole), so this
    is a floor under any server's lateness with the guard on (``guard holds`` in the report)."""
    from persona.guard import BrandGuard, GuardContext
    from persona.loader import load_brands
    from persona.prompt import assemble
    from testkit.fake_openai.behaviours import split_words

    brand = load_brands(PROJECT_ROOT / "brands")["demo"]
    late: list[float] = []
    for rid in range(1, replies + 1):
        asked = f"Order {rid}: {QUESTION}"
        prompt = assemble(brand, [], asked)
        guard = BrandGuard(brand, GuardContext(question=asked, context=tuple(s.text for s in prompt.knowledge)))
        text = reply_text(rid, words)
        pieces = split_words(text)
        released = 0
        out: list[int] = []  # the piece with which each character went out, up to `released`
        for i, piece in enumerate(pieces):
            step = guard.feed(piece)
            if step.violation is not None:
                raise RuntimeError(f"the guard stopped a bench reply: {step.violation}")
            released += len(step.release)
            out += [i] * (released - len(out))
        step = guard.finish("stop")
        if step.violation is not None:
            raise RuntimeError(f"the guard stopped a bench reply at its end: {step.violation}")
        out += [len(pieces) - 1] * (len(text) - len(out))
        late += [(out[end - 1] - i) * WORD_DELAY_S for i, end in enumerate(word_ends(text))]
    return late


# --- the upstream: testkit's fake, noting when it wrote each word ------------------------------------


class TimedFake(FakeOpenAI):
    """The fake OpenAI server, recording the time each content chunk of each reply was written."""

    def __init__(self) -> None:
        super().__init__(keep_alive=True)  # as the OpenAI API (and any server behind a load balancer) does
        self.sent: dict[int, list[float]] = {}

    async def _chat_stream(self, conn: Any, body: dict[str, Any], scenario: Scenario) -> None:
        text = getattr(scenario, "text", "")
        match = REF.match(text)
        if match is None:
            await super()._chat_stream(conn, body, scenario)
            return
        times = self.sent[int(match.group(1))] = []
        write_chunk = conn.write_chunk

        async def timed(data: bytes) -> None:
            await write_chunk(data)
            if b'"content": "' in data and b'"content": ""' not in data:
                times.append(time.perf_counter())

        conn.write_chunk = timed
        await super()._chat_stream(conn, body, scenario)


# --- the naive relay ------------------------------------------------------------------------------


async def floor_chunks(base_url: str, text: str) -> AsyncIterator[str]:
    """The reply's text pieces read off a plain asyncio socket: one connection per reply, the chunked
    body and its server-sent events split by hand, each event parsed with ``orjson``. No HTTP client
    library, no SDK, no error handling: the least a relay on this stack can spend reading the model."""
    url = httpx.URL(base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    body = orjson.dumps({"model": "fake-model", "messages": [{"role": "user", "content": text}], "stream": True})
    head = (
        f"POST {url.path.rstrip('/')}/chat/completions HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
        f"Authorization: Bearer bench\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    try:
        await reader.readuntil(b"\r\n\r\n")  # the fake always answers 200, chunked
        pending = b""
        while True:
            size = int((await reader.readline()).split(b";", 1)[0], 16)
            if size == 0:
                return
            pending += (await reader.readexactly(size + 2))[:-2]
            *events, pending = pending.split(b"\n\n")
            for event in events:
                data = event.partition(b"data: ")[2]
                if not data or data == b"[DONE]":
                    continue
                choices = orjson.loads(data).get("choices")
                if choices and choices[0]["delta"].get("content"):
                    yield choices[0]["delta"]["content"]
    finally:
        writer.close()


def serve_naive(port: int, base_url: str, *, floor: bool = False) -> None:
    """FastAPI + the openai SDK, each chunk straight to the socket (run in its own process). With
    ``floor``, the same relay reads the model with :func:`floor_chunks` instead of the SDK."""
    app = FastAPI()
    client = openai.AsyncOpenAI(api_key="bench", base_url=base_url, max_retries=0)

    async def sdk_chunks(text: str) -> AsyncIterator[str]:
        stream = await client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": text}], stream=True
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    def chunks(text: str) -> AsyncIterator[str]:
        return floor_chunks(base_url, text) if floor else sdk_chunks(text)

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        with contextlib.suppress(Exception):
            while True:
                frame = json.loads(await socket.receive_text())
                async for text in chunks(frame["text"]):
                    await socket.send_text(json.dumps({"type": "delta", "text": text}))
                await socket.send_text(json.dumps({"type": "done"}))

    @app.get("/sse")
    async def sse(q: str) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            async for text in chunks(q):
                yield f"event: delta\ndata: {json.dumps({'type': 'delta', 'text': text})}\n\n"
            yield 'event: done\ndata: {"type": "done"}\n\n'

        return StreamingResponse(events(), media_type="text/event-stream")

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


# --- processes: pinning, CPU time, memory -------------------------------------------------------------


def cpu_split() -> tuple[set[int], set[int]]:
    """(server cores, load-generator cores): apart when there are two or more."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return set(cores), set(cores)
    return {cores[0]}, set(cores[1:])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def spawn(
    argv: list[str], port: int, env: dict[str, str], cpus: set[int], cwd: Path = PROJECT_ROOT
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once per system, before any load
        argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd
    )
    os.sched_setaffinity(proc.pid, cpus)
    async with asyncio.timeout(SERVER_START_TIMEOUT_S):
        while True:
            try:
                async with httpx.AsyncClient(timeout=2) as http:
                    path = "/readyz" if "api" in argv else "/docs"
                    if (await http.get(f"http://127.0.0.1:{port}{path}")).status_code == 200:
                        return proc
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- clients --------------------------------------------------------------------------------------------


@dataclass
class Received:
    """One reply as a client saw it: the text, and when each word of it arrived."""

    text: str = ""
    arrivals: list[float] = field(default_factory=list)
    rid: int | None = None
    ends: list[int] = field(default_factory=list)
    words: int = 0
    ending: str = ""  # how the reply ended when not as expected: the error code, a retract's reason

    def add(self, delta: str) -> None:
        now = time.perf_counter()
        self.text += delta
        if self.rid is None:
            match = REF.match(self.text)
            if match is None:
                return
            self.rid = int(match.group(1))
            self.ends = word_ends(reply_text(self.rid, self.words))
        while len(self.arrivals) < len(self.ends) and len(self.text) >= self.ends[len(self.arrivals)]:
            self.arrivals.append(now)


@dataclass
class Result:
    lateness: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    words: int = 0  # the words scored (with --steady: those that arrived in the window)
    all_words: int = 0  # every word delivered
    failures: int = 0
    errors: list[str] = field(default_factory=list)


def score(
    fake: TimedFake, got: Received, result: Result, words: int, window: tuple[float, float] | None = None
) -> None:
    """One reply into ``result``; with a ``window`` (``--steady``), only the words that arrived within it."""
    expected = reply_text(got.rid, words) if got.rid is not None else None
    sent = fake.sent.get(got.rid or -1, [])
    if expected is None or got.text != expected or len(sent) < len(got.arrivals):
        result.failures += 1
        result.errors.append(got.ending or f"wrong text ({len(got.text)} of {len(expected or '')} characters)")
        return
    pairs = list(zip(got.arrivals, sent, strict=False))
    result.all_words += len(pairs)
    if window is not None:
        if window[0] <= pairs[0][0] < window[1]:
            result.first.append(pairs[0][0] - pairs[0][1])
        pairs = [(a, s) for a, s in pairs if window[0] <= a < window[1]]
    elif pairs:
        result.first.append(pairs[0][0] - pairs[0][1])
    result.lateness += [a - s for a, s in pairs]
    result.words += len(pairs)


def note_ending(got: Received, msg: dict[str, Any]) -> None:
    """Keep why a reply did not end as a plain ``done{stop}`` (reported with the failures)."""
    if msg["type"] == "error":
        got.ending = f"error {msg.get('code')}"
    elif msg["type"] == "retract":
        got.ending = f"retract {msg.get('reason')}"
    elif msg.get("finish_reason") not in (None, "stop") and not got.ending:
        got.ending = f"done {msg.get('finish_reason')}"


async def naive_ws(port: int, replies: int, words: int) -> list[Received]:
    out = []
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:
        for _ in range(replies):
            got = Received(words=words)
            await ws.send(json.dumps({"text": question()}))
            async for raw in ws:
                if take(got, raw):
                    break
            out.append(got)
    return out


async def sse_data(port: int, target: str, headers: dict[str, str] | None = None) -> AsyncIterator[bytes]:
    """The ``data:`` payloads of a server-sent event stream, read off a plain asyncio socket (the body
    de-chunked with :class:`llm.wire.ChunkedDecoder`). A load generator built on an HTTP client library
    spent most of the load core on SSE rows (``load side busy`` 75-90 % with httpx), so lateness measured
    the clients as much as the server: this reader costs the server nothing more and the load side less."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n{extra}"
        "Connection: close\r\n\r\n".encode()
    )
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if status != b"200":
            raise RuntimeError(f"the event stream answered {status.decode()}")
        decoder = ChunkedDecoder() if b"transfer-encoding: chunked" in head.lower() else None
        pending = b""
        while True:
            data = await reader.read(65536)
            if not data:
                return
            if decoder is not None:
                data = b"".join(decoder.feed(data))
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                if line.startswith(b"data: "):
                    yield line[6:].rstrip(b"\r")
            if decoder is not None and decoder.done:
                return
    finally:
        writer.close()


def take(got: Received, raw: str | bytes) -> bool:
    """One event of this server's protocol (or the naive relay's) into ``got``; whether the reply ended."""
    msg = orjson.loads(raw)
    if msg["type"] == "delta":
        got.add(msg["text"])
    elif msg["type"] in ("done", "error", "retract"):
        note_ending(got, msg)
        return msg["type"] != "retract"
    return False


async def read_sse(events: AsyncIterator[bytes], got: Received) -> None:
    async for data in events:
        if take(got, data):
            return


async def naive_sse(port: int, replies: int, words: int) -> list[Received]:
    out = []
    for _ in range(replies):
        got = Received(words=words)
        await read_sse(sse_data(port, f"/sse?{urllib.parse.urlencode({'q': question()})}"), got)
        out.append(got)
    return out


async def server_ws(port: int, replies: int, words: int) -> list[Received]:
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=CLIENT_TIMEOUT_S, verify=TLS) as http:
        negotiated = (await http.post("/v1/negotiate", json={"brand": "demo"})).json()
    out = []
    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/ws", max_size=None) as ws:
        await ws.send(json.dumps({"type": "hello", "token": negotiated["token"]}))
        for i in range(replies):
            got = Received(words=words)
            await ws.send(json.dumps({"type": "send", "client_message_id": f"m{i}", "text": question()}))
            async for raw in ws:
                if take(got, raw):
                    break
            out.append(got)
    return out


async def server_sse(port: int, replies: int, words: int) -> list[Received]:
    out = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=CLIENT_TIMEOUT_S, verify=TLS) as http:
        negotiated = (await http.post("/v1/negotiate", json={"brand": "demo"})).json()
        auth = {"Authorization": f"Bearer {negotiated['token']}"}
        for i in range(replies):
            got = Received(words=words)
            sent = await http.post(
                f"/v1/conversations/{negotiated['conversation_id']}/messages",
                json={"client_message_id": f"m{i}", "text": question()},
                headers=auth,
            )
            await read_sse(sse_data(port, sent.json()["events_url"], auth), got)
            out.append(got)
    return out


Client = Callable[[int, int, int], Awaitable[list[Received]]]


class LoopLag:
    """How late this process's event loop runs a ticker: the clients and the fake upstream share this
    loop, so when it queues, lateness measures the load side, not the server. Reported per row."""

    TICK_S = 0.01

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            due = time.perf_counter() + self.TICK_S
            await asyncio.sleep(self.TICK_S)
            self.lags.append(max(0.0, time.perf_counter() - due))

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def load(
    fake: TimedFake,
    client: Client,
    port: int,
    clients: int,
    replies: int,
    words: int,
    ramp_s: float = 0.0,
    window: tuple[float, float] | None = None,
) -> Result:
    """``clients`` at once, each streaming ``replies`` one after the other; the clients' first sends spread
    evenly over ``ramp_s`` (0: all in the same instant); scored within ``window`` when given."""
    result = Result()

    async def one(i: int) -> None:
        await asyncio.sleep(ramp_s * i / clients)
        try:
            async with asyncio.timeout(CLIENT_TIMEOUT_S):
                for got in await client(port, replies, words):
                    score(fake, got, result, words, window)
        except Exception as exc:
            result.failures += replies
            result.errors.append(repr(exc)[:200])

    await asyncio.gather(*(one(i) for i in range(clients)))
    return result


# --- idle connections -------------------------------------------------------------------------------


async def idle_cost(pid: int, port: int, count: int, fake: TimedFake, kind: str) -> dict[str, float]:
    """Server memory (KB) per open WebSocket or SSE connection, heartbeats on (one kind per fresh
    server: memory freed by one kind would be reused by the other and hide its cost)."""
    base = f"http://127.0.0.1:{port}"
    out: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base, timeout=CLIENT_TIMEOUT_S, verify=TLS) as http:
        negotiated = (await http.post("/v1/negotiate", json={"brand": "demo"})).json()
        await asyncio.sleep(1)
        before = rss_kb(pid)
        if kind == "websocket":
            await idle_websockets(pid, port, count, negotiated, before, out)
            return out
        # SSE: followers of one open stream whose model has not said its first word yet.
        await idle_sse(pid, http, count, negotiated, fake, out)
    return out


async def idle_websockets(
    pid: int, port: int, count: int, negotiated: dict[str, Any], before: int, out: dict[str, float]
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        for start in range(0, count, 100):
            sockets = await asyncio.gather(
                *(
                    stack.enter_async_context(websockets.connect(f"ws://127.0.0.1:{port}/v1/ws"))
                    for _ in range(start, min(count, start + 100))
                )
            )
            for ws in sockets:
                await ws.send(json.dumps({"type": "hello", "token": negotiated["token"]}))
                await ws.recv()  # welcome
        await asyncio.sleep(2)
        out["websocket_kb"] = (rss_kb(pid) - before) / count


async def idle_sse(
    pid: int, http: httpx.AsyncClient, count: int, negotiated: dict[str, Any], fake: TimedFake, out: dict[str, float]
) -> None:
    base = str(http.base_url)
    fake.enqueue(Reply(text="Ref0 idle.", first_delay_s=120))
    auth = {"Authorization": f"Bearer {negotiated['token']}"}
    sent = await http.post(
        f"/v1/conversations/{negotiated['conversation_id']}/messages",
        json={"client_message_id": "idle", "text": QUESTION},
        headers=auth,
    )
    url = sent.json()["events_url"]
    await asyncio.sleep(1)
    before = rss_kb(pid)
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
    async with (
        httpx.AsyncClient(base_url=base, timeout=CLIENT_TIMEOUT_S, limits=limits, verify=TLS) as sse,
        contextlib.AsyncExitStack() as stack,
    ):
        for start in range(0, count, 100):
            responses = await asyncio.gather(
                *(
                    stack.enter_async_context(sse.stream("GET", url, headers=auth))
                    for _ in range(start, min(count, start + 100))
                )
            )
            refused = [r.status_code for r in responses if r.status_code != 200]
            if refused:
                raise RuntimeError(f"idle SSE connections refused: {refused[:5]}")
        await asyncio.sleep(2)
        out["sse_kb"] = (rss_kb(pid) - before) / count
    await http.post(f"/v1/streams/{sent.json()['stream_id']}/cancel", headers=auth)


# --- the run ----------------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    result: Result
    cpu_s: float  # the server's, plus redis-server's on Redis
    redis_cpu_s: float | None = None  # redis-server's alone
    redis_commands: dict[str, tuple[int, int]] | None = None  # command -> (calls, usec), INFO commandstats
    load_busy: float = 0.0  # the load side's CPU (this process: clients + fake upstream; redis-server) / wall, per core
    load_lag_p99_s: float = 0.0  # how late this process's event loop ran a 10 ms ticker (p99): the load side's queue


async def redis_stats(url: str, *, reset: bool = False) -> dict[str, tuple[int, int]]:
    """redis-server's own count of calls and time per command (``INFO commandstats``): a figure the
    load on the machine does not blur much. ``reset`` zeroes it first."""
    client = aioredis.Redis.from_url(url)
    try:
        if reset:
            await client.config_resetstat()
            return {}
        info = await client.info("commandstats")
    finally:
        await client.aclose()
    return {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for name, v in info.items()}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


async def main(args: argparse.Namespace) -> None:
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit[1], limit[1]))
    server_cpus, load_cpus = cpu_split()
    os.sched_setaffinity(0, load_cpus)
    rows: list[Row] = []
    idle: dict[str, float] = {}
    async with TimedFake() as fake:
        rid = iter(range(1, 10**9))

        def enqueue(n: int) -> None:
            first = args.ttft_ms / 1000
            fake.enqueue(
                *(Reply(reply_text(next(rid), args.words), delay_s=WORD_DELAY_S, first_delay_s=first) for _ in range(n))
            )

        warmed: set[int] = set()

        def reply_s() -> float:
            return reply_seconds(args.words, args.ttft_ms)

        async def measure(name: str, client: Client, port: int, pids: list[int], redis_url: str | None = None) -> None:
            if args.only not in name:
                return
            if args.warmup and port not in warmed:  # first use (lazy imports, caches, pools) is not per word
                warmed.add(port)
                # At the measured concurrency at least: pools (Redis, upstream) grow to what the rows need.
                count = max(args.warmup, args.clients)
                enqueue(count)
                await load(fake, client, port, count, 1, args.words, args.ramp_s)
            enqueue(args.clients * args.replies)
            if redis_url is not None:
                await redis_stats(redis_url, reset=True)
            load_pids = [os.getpid(), *pids[1:]]  # this process (clients, fake upstream) and redis-server

            async def sample(at: float) -> tuple[list[float], float, float]:
                await asyncio.sleep(max(0.0, at - time.perf_counter()))
                return [cpu_seconds(p) for p in pids], sum(map(cpu_seconds, load_pids)), time.perf_counter()

            now = time.perf_counter()
            # --steady: the figures are taken while every client is streaming (after the ramp, before the
            # first client's last reply ends); otherwise over the whole load.
            window = (now + args.ramp_s + 1.0, now + args.replies * reply_s() - 1.0) if args.steady else None
            first = asyncio.ensure_future(sample(window[0] if window else now))
            last = asyncio.ensure_future(sample(window[1])) if window else None
            await asyncio.sleep(0)
            with LoopLag() as lag:
                result = await load(fake, client, port, args.clients, args.replies, args.words, args.ramp_s, window)
            cpu0, load0, wall0 = await first
            cpu1, load1, wall1 = await (last if last is not None else sample(0.0))
            cpus = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
            busy = (load1 - load0) / (wall1 - wall0) / len(load_cpus)
            stats = await redis_stats(redis_url) if redis_url is not None else None
            row = Row(name, result, sum(cpus), cpus[1] if len(cpus) > 1 else None, stats)
            row.load_busy, row.load_lag_p99_s = busy, pct(lag.lags, 0.99) / 1000
            rows.append(row)
            why = collections.Counter(result.errors).most_common(4)
            print(f"  {name}: {result.words} words, {result.failures} failures {why}", flush=True)

        for mode, label in (("--serve-naive", "naive relay"), ("--serve-floor", "floor relay")):
            port = free_port()
            naive = await spawn(
                [sys.executable, "-m", "bench.stream_bench", mode, str(port), fake.base_url], port, {}, server_cpus
            )
            try:
                await measure(f"{label}, WebSocket", naive_ws, port, [naive.pid])
                await measure(f"{label}, SSE", naive_sse, port, [naive.pid])
            finally:
                stop(naive)

        redis = RedisProcess()
        redis.start()
        assert redis.proc is not None
        os.sched_setaffinity(redis.proc.pid, load_cpus)
        try:
            # --baseline-root: the same systems again from another checkout (before/after in one run).
            roots = [(args.server_root, "")]
            if args.baseline_root is not None:
                roots.append((args.baseline_root, " [baseline]"))
            for buffer, url in (("memory", "memory://"), ("redis", redis.url)):
                for guard in ("on", "off"):
                    for root, label in roots:  # each system's before and after back to back
                        port = free_port()
                        env = {
                            "PORT": str(port),
                            "BUFFER_URL": url,
                            "LLM_PROVIDER": "openai",
                            "OPENAI_API_KEY": "bench",
                            "OPENAI_BASE_URL": fake.base_url,
                            "GUARD_ENABLED": "true" if guard == "on" else "false",
                            "LOG_LEVEL": "WARNING",
                            "SESSION_SECRET": "bench",
                            # Every client comes from 127.0.0.1: the per-address limits would measure themselves.
                            "APP_ENV": "dev",
                            "RATE_NEGOTIATES_PER_MIN": "1000000",
                            "RATE_REPLIES_PER_MIN": "1000000",
                            "MAX_CONNECTIONS_PER_ADDRESS": "1000000",
                            "MAX_RUNNING_REPLIES": "1000000",
                            "MAX_RUNNING_REPLIES_PER_BRAND": "1000000",
                            "HEARTBEAT_MS": "5000",
                            "UPSTREAM_FIRST_TOKEN_TIMEOUT_S": "300",
                            "UPSTREAM_TOTAL_DEADLINE_S": "600",
                            "WS_RATE_PER_S": "1000",
                            "OPENAI_STREAM_PARSER": args.parser,
                        }
                        server = await spawn([sys.executable, "-m", "api"], port, env, server_cpus, root)
                        pids = [server.pid] + ([redis.proc.pid] if buffer == "redis" else [])
                        stats_url = redis.url if buffer == "redis" else None
                        name = f"{buffer}{label}, guard {guard}"
                        try:
                            await measure(f"{name}, WebSocket", server_ws, port, pids, stats_url)
                            await measure(f"{name}, SSE", server_sse, port, pids, stats_url)
                        finally:
                            stop(server)
        finally:
            redis.stop()

        # Idle cost on a fresh server (memory freed after a load run would hide the connections').
        port = free_port()
        env = {**env, "PORT": str(port), "BUFFER_URL": "memory://", "GUARD_ENABLED": "true"}
        for kind in ("websocket", "sse"):
            port = free_port()
            env = {**env, "PORT": str(port)}
            server = await spawn([sys.executable, "-m", "api"], port, env, server_cpus, args.server_root)
            try:
                idle.update(await idle_cost(server.pid, port, args.idle, fake, kind))
            finally:
                stop(server)

    print(report(args, rows, idle, server_cpus, load_cpus, guard_holds(min(args.clients, 100), args.words)))


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, {platform.system()}"


def report(
    args: argparse.Namespace,
    rows: list[Row],
    idle: dict[str, float],
    server: set[int],
    load: set[int],
    holds: list[float],
) -> str:
    pinned = f"server on core {sorted(server)}, load generator + upstream + redis on {sorted(load)}"
    if server == load:
        pinned = "one core: not pinned apart"
    lines = [
        "",
        f"{args.clients} clients x {args.replies} replies x {args.words} words at {1 / WORD_DELAY_S:.0f} words/s, "
        f"first word {args.ttft_ms:.0f} ms after the request, first sends spread over {args.ramp_s:g} s"
        f"{' (steady: figures only while every client streams)' if args.steady else ''}; "
        f"{machine()}; {pinned}",
        "",
        "| system | words | failures | lateness p50 ms | lateness p99 ms | first word p50 ms | server CPU µs/word "
        "| load side busy | load loop lag p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        r = row.result
        per_word = row.cpu_s / r.words * 1e6 if r.words else float("nan")
        first = statistics.median(r.first) * 1000 if r.first else float("nan")
        lines.append(
            f"| {row.name} | {r.words} | {r.failures} | {pct(r.lateness, 0.5):.1f} | {pct(r.lateness, 0.99):.1f} "
            f"| {first:.1f} | {per_word:.0f} | {row.load_busy:.0%} | {row.load_lag_p99_s * 1000:.1f} |"
        )
    lines += [
        "",
        f"guard holds (no server, no CPU: the guard's own holds on the same replies, {len(holds)} words): "
        f"lateness p50 {pct(holds, 0.5):.1f} ms, p99 {pct(holds, 0.99):.1f} ms, "
        f"max {max(holds, default=0) * 1000:.1f} ms",
    ]
    redis_rows = [row for row in rows if row.redis_commands is not None and row.result.words]
    if redis_rows:
        lines += [
            "",
            "Redis rows, per delivered word: redis-server's CPU (process time) and its own command accounting",
            "(`INFO commandstats`: calls and µs inside commands; scripts count their inner commands too).",
            "",
            "| system | redis-server CPU µs/word | commands µs/word | calls/word | top (calls/word x µs/call) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for row in redis_rows:
            assert row.redis_commands is not None
            words = row.result.all_words  # the commands are counted over the whole load
            cmds = {k: v for k, v in row.redis_commands.items() if k not in ("config|resetstat", "info")}
            calls = sum(c for c, _ in cmds.values())
            usec = sum(u for _, u in cmds.values())
            top = sorted(cmds.items(), key=lambda kv: -kv[1][1])[:5]
            tops = ", ".join(f"{k} {c / words:.2f} x {u / max(c, 1):.1f}" for k, (c, u) in top)
            redis_cpu = (row.redis_cpu_s or 0.0) / max(row.result.words, 1) * 1e6  # the words its CPU was taken over
            lines.append(f"| {row.name} | {redis_cpu:.0f} | {usec / words:.1f} | {calls / words:.2f} | {tops} |")
    if idle:
        lines += [
            "",
            f"Idle, {args.idle} connections (memory buffer, heartbeat 5 s): "
            f"{idle['websocket_kb']:.1f} KB per WebSocket, {idle['sse_kb']:.1f} KB per SSE connection",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50 clients x 1 reply x 30 words, 200 idle")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--replies", type=int, default=2)
    parser.add_argument("--words", type=int, default=60)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument(
        "--steady",
        action="store_true",
        help="a steady load: the first sends spread over one reply's length, 6 replies per client back to back, "
        "and every figure taken only while all the clients are streaming (after the ramp, before the first "
        "client's last reply ends)",
    )
    parser.add_argument(
        "--ramp-s",
        type=float,
        default=0.0,
        help="spread the clients' first sends evenly over this many seconds (default 0: all in the same instant, "
        "a thundering herd; one reply's length, 3.3 s, makes replies start at a steady rate, as on a live site)",
    )
    parser.add_argument(
        "--ttft-ms",
        type=float,
        default=300.0,
        help="the model's time to first token (lateness is counted from when it sends each word, so this is "
        "not in any figure; an SSE client opens its event stream while the model thinks, as with a real model)",
    )
    parser.add_argument(
        "--server-root", type=Path, default=PROJECT_ROOT, help="run the server from this checkout (before/after)"
    )
    parser.add_argument(
        "--baseline-root",
        type=Path,
        default=None,
        help="also run the server systems from this checkout, labelled [baseline] (before/after in one run)",
    )
    parser.add_argument(
        "--warmup", type=int, default=20, help="replies each server streams, unmeasured, before its first row"
    )
    parser.add_argument("--parser", choices=["wire", "lean", "sdk"], default="wire", help="OPENAI_STREAM_PARSER")
    parser.add_argument("--only", default="", help="run only the systems whose name contains this")
    parser.add_argument("--serve-naive", nargs=2, metavar=("PORT", "UPSTREAM"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor", nargs=2, metavar=("PORT", "UPSTREAM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_naive:
        serve_naive(int(args.serve_naive[0]), args.serve_naive[1])
    elif args.serve_floor:
        serve_naive(int(args.serve_floor[0]), args.serve_floor[1], floor=True)
    else:
        if args.quick:
            args.clients, args.replies, args.words, args.idle = 50, 1, 30, 200
        for name, value in (("clients", 1000), ("replies", 10), ("words", 500), ("idle", 5000)):
            if not 1 <= getattr(args, name) <= value:
                parser.error(f"--{name} must be between 1 and {value}")
        if args.steady:
            args.replies = max(args.replies, 6)
            args.ramp_s = reply_seconds(args.words, args.ttft_ms)
            if args.replies * args.ramp_s - 1.0 <= 2 * args.ramp_s + 1.0:
                parser.error("--steady needs longer replies (--words) for a window with every client streaming")
        if not 0 <= args.ramp_s <= 600:
            parser.error("--ramp-s must be between 0 and 600")
        if not 0 <= args.ttft_ms <= 10_000:
            parser.error("--ttft-ms must be between 0 and 10000")
        asyncio.run(main(args))
