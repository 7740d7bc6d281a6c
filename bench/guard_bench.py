"""``make bench-guard``: what the streaming guard costs per token, next to the pass-through guard.

Feeds realistic replies for each shipped brand token by token (about 4 characters a piece, like
an OpenAI stream) through :class:`persona.guard.BrandGuard` and :class:`PassThroughGuard`, and
prints the CPU time per token (median of several rounds) and the end-of-reply check. The guard
runs synchronously on the event loop, so this is the latency it adds to every token; compare it
with a model's 10-50 ms between tokens.

``--server``: what a loaded server asks of it instead (one-word tokens of the bench corpus, a new question
per reply, and the labelled replies), in process time per token and per reply.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

import yaml

from persona.brand import Brand
from persona.demo import compose_answer
from persona.guard import BrandGuard, GuardContext, PassThroughGuard, ReplyGuard
from persona.loader import load_brands
from persona.prompt import pick_knowledge

ROOT = Path(__file__).resolve().parent.parent


def tokens(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def reply_for(brand: Brand) -> str:
    questions = [s.topic for s in brand.knowledge] or ["hello"]
    return " ".join(compose_answer(brand, q) for q in questions)


def run(guard: ReplyGuard, pieces: list[str]) -> tuple[float, float]:
    """Seconds per token for the feeds, and seconds for finish()."""
    started = time.perf_counter()
    for piece in pieces:
        guard.feed(piece)
    fed = time.perf_counter()
    guard.finish("stop")
    return (fed - started) / len(pieces), time.perf_counter() - fed


def words(text: str) -> list[str]:
    """``text`` as one-word tokens, each with the whitespace before it (" roast"), as a model streams."""
    return re.findall(r"\s*\S+", text)


def server_like(brands: dict[str, Brand], replies: int, rounds: int) -> None:
    """What a loaded server asks of the guard (``make bench``): replies of 30 one-word tokens of the bench's
    fact-dense corpus, each to a question of its own (so nothing per question is cached), with the knowledge
    retrieval picks for it; and the labelled replies (eval/labelled) in one-word tokens. Process time per
    token fed, and per reply for making the guard and finishing it (median of ``rounds``)."""
    from bench.stream_bench import reply_text

    brand = brands["demo"]
    work: list[tuple[Brand, GuardContext, list[str]]] = []
    for rid in range(replies):
        question = f"What about question number {rid} on shipping?"
        context = tuple(s.text for s in pick_knowledge(brand, question))
        work.append((brand, GuardContext(question=question, context=context), words(reply_text(rid, 30))))
    labelled: list[tuple[Brand, GuardContext, list[str]]] = []
    items = [
        item
        for f in sorted((ROOT / "eval" / "labelled").glob("*.yaml"))
        for item in yaml.safe_load(f.read_text())["items"]
    ]
    for shipped in brands.values():
        for item in items:
            context = tuple(s.text for s in pick_knowledge(shipped, item["question"]))
            labelled.append((shipped, GuardContext(question=item["question"], context=context), words(item["reply"])))

    def once(items: list[tuple[Brand, GuardContext, list[str]]]) -> tuple[float, float]:
        fed = made = 0.0
        tokens = 0
        clock = time.process_time
        for brand_, context_, pieces in items:
            started = clock()
            guard = BrandGuard(brand_, context_)
            ready = clock()
            for piece in pieces:
                step = guard.feed(piece)
                tokens += 1
                if step.violation is not None or step.stop:
                    break
            done = clock()
            guard.finish("stop")
            made += ready - started + clock() - done
            fed += done - ready
        return fed / tokens, made / len(items)

    once(work), once(labelled)  # (warm: the language detector, the compiled rules)
    print(f"{'replies':<24} {'feed µs/token':>14} {'make + finish µs/reply':>23}")
    for name, items in ((f"corpus, 30 words x {replies}", work), (f"labelled x {len(brands)} brands", labelled)):
        runs = [once(items) for _ in range(rounds)]
        per_token = statistics.median(r[0] for r in runs) * 1e6
        per_reply = statistics.median(r[1] for r in runs) * 1e6
        print(f"{name:<24} {per_token:>14.1f} {per_reply:>23.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--server", action="store_true", help="server-like replies: one-word tokens, a new question per reply"
    )
    parser.add_argument("--replies", type=int, default=200, help="with --server: corpus replies per round")
    args = parser.parse_args()
    brands = load_brands(ROOT / "brands")
    if args.server:
        server_like(brands, args.replies, min(args.rounds, 5))
        return
    print(f"{'brand':<10} {'tokens':>6} {'pass-through µs/token':>22} {'brand guard µs/token':>21} {'finish ms':>10}")
    for shipped in brands.values():
        # The whole reply is measured: the length policy (which would stop the guard after
        # max_sentences) is still tracked on every token, but its limit is out of the way.
        brand = shipped.model_copy(update={"length": shipped.length.model_copy(update={"max_sentences": 10**9})})
        text = reply_for(brand)
        pieces = tokens(text)
        context = GuardContext(question="a question", context=(text[:200],))
        base, guarded, finish = [], [], []
        for _ in range(args.rounds):
            base.append(run(PassThroughGuard(), pieces)[0])
            per_token, end = run(BrandGuard(brand, context), pieces)
            guarded.append(per_token)
            finish.append(end)
        print(
            f"{brand.id:<10} {len(pieces):>6} {statistics.median(base) * 1e6:>22.2f} "
            f"{statistics.median(guarded) * 1e6:>21.2f} {statistics.median(finish) * 1e3:>10.3f}"
        )


if __name__ == "__main__":
    main()
