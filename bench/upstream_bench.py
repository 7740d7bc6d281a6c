"""``make bench-upstream``: the CPU the client side spends per streamed chunk, by ``OPENAI_STREAM_PARSER``.

The fake OpenAI server runs in a child process (its CPU is not counted); this process streams replies
of ``--words`` one-word chunks through :class:`llm.openai_provider.OpenAIProvider`, ``--conc`` at a
time, and prints ``time.process_time()`` per chunk (request building and connecting included, spread
over the chunks), the parsers measured in turn, round after round, so that a busy shared machine
slows them alike. ``--uvloop``: the loop the server runs on; ``--keep-alive``: the fake keeps
connections open, as OpenAI does.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from typing import Any, cast

from llm.base import ReplyRequest
from llm.openai_provider import OpenAIProvider, StreamParser
from testkit.fake_openai import FakeOpenAI, Reply


def serve(pipe: Connection, text: str, delay_s: float, keep_alive: bool) -> None:
    async def main() -> None:
        async with FakeOpenAI(default=Reply(text=text, delay_s=delay_s), keep_alive=keep_alive) as fake:
            pipe.send(fake.base_url)
            await asyncio.Event().wait()

    asyncio.run(main())


async def stream(provider: OpenAIProvider, request: ReplyRequest) -> int:
    chunks = 0
    async for piece in await provider.open_reply(request):
        chunks += bool(piece.text)
    return chunks


async def measure(base_url: str, parser: StreamParser, conc: int, rounds: int, words: int) -> float:
    """CPU µs per chunk over ``rounds`` x ``conc`` replies (after one warm-up round)."""
    provider = OpenAIProvider(
        api_key="bench",
        base_url=base_url,
        model="fake-model",
        connect_timeout_s=5.0,
        read_timeout_s=60.0,
        stream_parser=parser,
    )
    request = ReplyRequest(brand_id="bench", messages=[{"role": "user", "content": "Hi"}], max_tokens=words * 2)
    try:
        await asyncio.gather(*(stream(provider, request) for _ in range(conc)))  # platform headers, pool
        started = time.process_time()
        chunks = 0
        for _ in range(rounds):
            chunks += sum(await asyncio.gather(*(stream(provider, request) for _ in range(conc))))
        cpu_s = time.process_time() - started
    finally:
        await provider.close()
    if chunks != rounds * conc * words:
        raise RuntimeError(f"{parser}: {chunks} chunks, expected {rounds * conc * words}")
    return cpu_s / chunks * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parsers", default="lean,wire", help="comma-separated: wire, lean, sdk")
    parser.add_argument("--words", type=int, default=60, help="chunks per reply")
    parser.add_argument("--delay", type=float, default=0.002, help="seconds between chunks")
    parser.add_argument("--conc", type=int, default=20, help="replies streamed at once")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --conc replies per measurement")
    parser.add_argument("--reps", type=int, default=5, help="measurements per parser")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--keep-alive", action="store_true")
    args = parser.parse_args()
    parsers = [cast(StreamParser, name) for name in args.parsers.split(",")]

    pipe, child = multiprocessing.Pipe()
    text = " ".join(f"w{i}" for i in range(args.words))
    server = multiprocessing.Process(target=serve, args=(child, text, args.delay, args.keep_alive), daemon=True)
    server.start()
    base_url = pipe.recv()
    run: Callable[[Coroutine[Any, Any, float]], float] = asyncio.run
    if args.uvloop:
        import uvloop

        run = uvloop.run
    results: dict[StreamParser, list[float]] = {name: [] for name in parsers}
    try:
        for _ in range(args.reps):
            for name in parsers:
                results[name].append(run(measure(base_url, name, args.conc, args.rounds, args.words)))
    finally:
        server.terminate()
    print(
        f"{'uvloop' if args.uvloop else 'asyncio'}, keep-alive {'on' if args.keep_alive else 'off'}, "
        f"{args.conc} x {args.rounds} replies of {args.words} chunks {args.delay * 1000:g} ms apart, {args.reps} reps"
    )
    for name, values in results.items():
        median = statistics.median(values)
        print(f"  {name:5s} {median:6.1f} µs/chunk (median; min {min(values):.1f}, max {max(values):.1f})")


if __name__ == "__main__":
    main()
