"""``python -m eval [--brand ID ...] [--judge] [--repeats N]``; exit status 1 when a check fails."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys

from loguru import logger
from pydantic import SecretStr

from api.settings import Settings
from eval.runner import render, run_eval
from eval.scenarios import load_scenarios


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__)
    parser.add_argument("--brand", action="append", help="only this brand (repeatable)")
    parser.add_argument("--judge", action="store_true", help="also score the voice with a real model (OPENAI_API_KEY)")
    parser.add_argument("--repeats", type=int, default=3, help="judge repeats per reply (default 3)")
    args = parser.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level=os.environ.get("EVAL_LOG_LEVEL", "WARNING"))
    settings = Settings()
    if not settings.session_secret:
        # No token leaves this process: any strong key will do.
        settings = settings.model_copy(update={"session_secret": SecretStr(secrets.token_urlsafe(48))})
    if settings.provider_name == "offline":
        settings = settings.model_copy(update={"offline_token_delay_ms": 0})  # pace is not under test
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
    return 1 if any(r.failures for r in reports) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
