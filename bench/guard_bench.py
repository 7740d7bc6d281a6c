"""``make bench-guard``: what the streaming guard costs per token, next to the pass-through guard.

Feeds realistic replies for each shipped brand token by token (about 4 characters a piece, like
an OpenAI stream) through :class:`persona.guard.BrandGuard` and :class:`PassThroughGuard`, and
prints the CPU time per token (median of several rounds) and the end-of-reply check. The guard
runs synchronously on the event loop, so this is the latency it adds to every token; compare it
with a model's 10-50 ms between tokens.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from persona.brand import Brand
from persona.demo import compose_answer
from persona.guard import BrandGuard, GuardContext, PassThroughGuard, ReplyGuard
from persona.loader import load_brands

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    brands = load_brands(ROOT / "brands")
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
