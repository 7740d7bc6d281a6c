"""The eval (``make eval``): every shipped scenario passes against the offline demo, and the checks
catch a model that breaks the rules (the fake OpenAI server playing a bad model). This checks the
rules, not the quality of a real model."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from api.settings import Settings
from eval.judge import judge, parse_scores
from eval.runner import Reply as EvalReply
from eval.runner import render, run_eval
from eval.scenarios import Expect, Scenario, ScenarioFile, Turn, load_scenarios
from testkit.fake_openai import FakeOpenAI, Reply
from testkit.server import make_brands_dir

pytestmark = pytest.mark.timeout(60)
BRANDS_DIR = Path(__file__).resolve().parent.parent / "brands"


def settings(**overrides: object) -> Settings:
    values = {
        "app_env": "dev",
        "llm_provider": "offline",
        "offline_token_delay_ms": 0,
        "brands_dir": make_brands_dir(),
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


async def test_every_shipped_scenario_passes_against_the_offline_demo() -> None:
    files = load_scenarios()
    assert set(files) == {"demo", "meridian"}
    for file in files.values():
        kinds = {s.kind for s in file.scenarios}
        assert {"greeting", "faq", "off_topic", "injection", "memory"} <= kinds
    reports = await run_eval(settings(), files)
    table = render(reports, "offline")
    assert "this checks the RULES" in table
    for report in reports:
        assert report.failures == [], table
        counts = report.counts()
        assert counts["memory"][0] >= 1 and counts["deflects"][0] >= 1 and counts["rules"][1] == 0


async def test_the_checks_catch_a_model_that_forgets_and_breaks_the_rules(fake: FakeOpenAI) -> None:
    scenario = ScenarioFile(
        brand="demo",
        scenarios=[
            Scenario(
                name="bad-model",
                kind="memory",
                turns=[
                    Turn(user="Hi, my name is Priya."),
                    Turn(user="Shipping?", expect=Expect(contains_any=["Monday"], fallback=False)),
                    Turn(user="What's my name?", expect=Expect(recall="Priya")),
                ],
            )
        ],
    )
    fake.enqueue(
        Reply(text="Hello! Nice to meet you."),
        Reply(text="We ship fast. As an AI language model, I hope this helps!"),
        Reply(text="I do not know your name."),
    )
    reports = await run_eval(
        settings(llm_provider="openai", openai_api_key="test", openai_base_url=fake.base_url),
        {"demo": scenario},
    )
    failures = {(f.check, f.reply.turn) for f in reports[0].failures}
    assert failures == {("no_fallback", 2), ("expect", 2), ("memory", 3)}
    table = render(reports, "openai")
    assert "memory" in table and "FAIL" in table


def test_the_judge_parses_scores_and_ignores_garbage() -> None:
    traits = ["warm", "concise"]
    assert parse_scores('Sure: {"warm": 5, "concise": 3.6}', traits) == {"warm": 5, "concise": 4}
    assert parse_scores('{"warm": 9, "loud": 2}', traits) == {}
    assert parse_scores("no json", traits) == {}


async def test_the_judge_reports_mean_and_spread_per_trait_over_repeats(fake: FakeOpenAI) -> None:
    from persona.loader import load_brand

    brand = load_brand(BRANDS_DIR / "demo.yaml")
    traits = brand.voice.traits
    fake.enqueue(
        Reply(text=json.dumps(dict.fromkeys(traits, 5))),
        Reply(text=json.dumps(dict.fromkeys(traits, 3))),
    )
    client = openai.AsyncOpenAI(api_key="test", base_url=fake.base_url, max_retries=0)
    reply = EvalReply("s", 1, "hi", "Hey there, coffee friend!", "done", "stop", False)
    scores = await judge(client, brand, [reply], model="fake-model", repeats=2)
    await client.close()
    rubric = fake.requests[0].json
    assert [(s.trait, s.mean, s.spread, s.n) for s in scores] == [(t, 4.0, 1.0, 2) for t in traits]
    assert rubric is not None and "warm, playful" in rubric["messages"][0]["content"]
