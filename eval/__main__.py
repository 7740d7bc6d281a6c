"""``python -m eval [--brand ID ...] [--only scenarios|labelled] [--set NAME|all] [--json FILE] [--judge]``.

Two sections: the multi-turn scenarios (exit status 1 when a check fails) and the labelled replies
through the streaming guard (precision, recall and false-positive rate per brand and per kind, and
the guard's cost per token; measurements, they never fail the run). ``--set`` picks the labelled set:
``eval/labelled/`` (default), the held-out ``eval/heldout/``, the second and third held-out
``eval/heldout2/`` and ``eval/heldout3/``, or all of them, one after the other (the JSON then has
one object per set, by name)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
from typing import Any

from loguru import logger
from pydantic import SecretStr

from api.settings import Settings
from eval.labelled import SETS, load_labelled
from eval.measure import measure, render_measures, to_json
from eval.runner import render, run_eval
from eval.scenarios import load_scenarios
from persona.loader import load_brands


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__)
    parser.add_argument("--brand", action="append", help="only this brand (repeatable)")
    parser.add_argument("--judge", action="store_true", help="also score the voice with a real model (OPENAI_API_KEY)")
    parser.add_argument("--repeats", type=int, default=3, help="judge repeats per reply (default 3)")
    parser.add_argument("--only", choices=("scenarios", "labelled"), help="one section (default: both)")
    parser.add_argument(
        "--json", metavar="FILE", help="also write the labelled figures as JSON ('-': only the JSON, on stdout)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds timing the guard's cost (0: skip; default 5)")
    parser.add_argument("--limit", type=int, help="labelled: at most N replies of each kind (a quick slice)")
    parser.add_argument(
        "--set",
        dest="labelled_set",
        choices=(*SETS, "all"),
        default="labelled",
        help="labelled: which set (eval/labelled/ by default, eval/heldout/, eval/heldout2/, eval/heldout3/, or all)",
    )
    parser.add_argument("--misses", action="store_true", help="labelled: list every missed or wrongly flagged reply")
    args = parser.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level=os.environ.get("EVAL_LOG_LEVEL", "WARNING"))
    settings = Settings()
    if not settings.session_secret:
        # No token leaves this process: any strong key will do.
        settings = settings.model_copy(update={"session_secret": SecretStr(secrets.token_urlsafe(48))})
    if settings.provider_name == "offline":
        settings = settings.model_copy(update={"offline_token_delay_ms": 0})  # pace is not under test
    failed = False
    if args.only != "labelled":
        failed = await scenarios(settings, args)
    if args.only != "scenarios":
        if args.only is None:
            print()
        labelled(settings, args)
    return 1 if failed else 0


def labelled(settings: Settings, args: argparse.Namespace) -> None:
    """The labelled section: every labelled reply of the chosen set(s) through the guard (CPU only, no I/O
    but the files)."""
    brands = load_brands(settings.brands_dir)
    names = list(SETS) if args.labelled_set == "all" else [args.labelled_set]
    figures: dict[str, Any] = {}
    for n, name in enumerate(names):
        directory, title = SETS[name]
        results = measure(brands, load_labelled(directory), args.brand, rounds=args.rounds, limit=args.limit)
        figures[name] = to_json(results, set_name=name)
        if args.json != "-":
            if n:
                print()
            source = f"{directory.relative_to(directory.parent.parent)}/"
            print(render_measures(results, misses=args.misses, title=title, source=source))
    data = figures[names[0]] if len(names) == 1 else figures
    if args.json == "-":  # machine-readable only
        print(json.dumps(data, indent=2))
    elif args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2)


async def scenarios(settings: Settings, args: argparse.Namespace) -> bool:
    """The scenario section (and the judge); True when a check failed."""
    reports = await run_eval(settings, load_scenarios(), args.brand)
    print(render(reports, settings.provider_name))
    if args.judge:
        if not settings.openai_api_key:
            print("\nLLM judge: skipped (it needs OPENAI_API_KEY).")
        else:
            import openai

            from eval.judge import judge, render_scores

            client = openai.AsyncOpenAI(
                api_key=settings.openai_api_key.get_secret_value(), base_url=settings.openai_base_url
            )
            model = os.environ.get("JUDGE_MODEL", "gpt-4o-mini")
            for report in reports:
                scores = await judge(client, report.brand, report.replies, model=model, repeats=args.repeats)
                print()
                print(render_scores(report.brand, scores))
            await client.close()
    return any(r.failures for r in reports)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
