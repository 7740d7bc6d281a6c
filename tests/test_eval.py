"""The eval (``make eval``): every shipped scenario passes against the offline demo, and the checks
catch a model that breaks the rules (the fake OpenAI server playing a bad model). This checks the
rules, not the quality of a real model."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import openai
import pytest

from api.settings import Settings
from eval.judge import judge, parse_scores
from eval.labelled import (
    GOOD_KINDS,
    HELDOUT_DIR,
    LABELLED_DIR,
    OFFBRAND_KINDS,
    Item,
    expected_language,
    for_brand,
    load_labelled,
)
from eval.measure import (
    Confusion,
    Verdict,
    confusion,
    guard_context,
    judge_item,
    kind_rows,
    measure,
    pieces,
    rule_rows,
)
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


# --- the labelled set and the guard's precision / recall (eval/labelled.py, eval/measure.py) ---------


def _item(id: str, label: str, kind: str, reply: str = "Our beans ship Monday.", question: str = "Shipping?") -> Item:
    return Item.model_validate(
        {"id": id, "brand": "demo", "question": question, "reply": reply, "label": label, "kind": kind, "note": "n"}
    )


def test_precision_recall_and_fpr_are_counted_per_brand_and_per_kind() -> None:
    verdicts = [
        Verdict(_item("a", "offbrand", "competitor"), "competitor", False, (), 3),
        Verdict(_item("b", "offbrand", "competitor"), None, False, ("off_topic",), 3),  # missed, only noted
        Verdict(_item("c", "offbrand", "rambling"), None, True, (), 9),  # trimmed: flagged
        Verdict(_item("d", "good", "answer"), "filler", False, (), 2),  # false positive
        Verdict(_item("e", "good", "answer"), None, False, (), 5),
        Verdict(_item("f", "good", "short"), None, False, ("off_topic",), 1),  # noted only
    ]
    plain = confusion(verdicts)
    assert (plain.tp, plain.fp, plain.fn, plain.tn) == (2, 1, 1, 2)
    assert (plain.precision, plain.recall, plain.fpr) == (2 / 3, 2 / 3, 1 / 3)
    noted = confusion(verdicts, with_notes=True)
    assert (noted.tp, noted.fp, noted.fn, noted.tn) == (3, 2, 0, 1)
    rows = {r.kind: r for r in kind_rows(verdicts)}
    assert list(rows) == ["competitor", "rambling", "answer", "short"]  # off-brand kinds first, in order
    competitor = rows["competitor"]
    assert (competitor.n, competitor.flagged, competitor.noted, competitor.rate) == (2, 1, 1, 0.5)
    assert competitor.precision == 1 / 2  # 1 flagged competitor vs the 1 flagged good reply
    assert rows["rambling"].rules == {"trimmed": 1} and rows["rambling"].rate == 1.0
    assert rows["answer"].rate == 1 / 2 and rows["answer"].precision is None
    assert rows["short"].rate == 0.0 and rows["short"].noted == 1
    assert rule_rows(verdicts) == [("competitor", 1, 0), ("filler", 0, 1), ("trimmed", 1, 0)]
    assert Confusion().precision is None and Confusion().recall is None and Confusion().fpr is None


def test_the_labelled_files_load_and_cover_every_kind_for_each_brand() -> None:
    from persona.checks import policy_findings
    from persona.loader import load_brands

    files = load_labelled()
    brands = load_brands(BRANDS_DIR)
    assert set(files) == {"demo", "meridian"}
    for brand_id, file in files.items():
        assert len(file.items) >= 150, brand_id
        assert all(i.brand == brand_id for i in file.items)
        # The counts hold whatever languages the brand declares (the labels of language items follow them).
        declared = getattr(brands[brand_id], "languages", None)
        for languages in (None, ["en"], ["en", "es", "fr", "de"], declared):
            items, _ = for_brand(file.items, languages)
            kinds = Counter((i.label, i.kind) for i in items)
            for kind in OFFBRAND_KINDS:
                assert kinds["offbrand", kind] >= 10, (brand_id, languages, kind)
            for kind in GOOD_KINDS:
                assert kinds["good", kind] >= 5, (brand_id, languages, kind)
            good = sum(i.label == "good" for i in items)
            assert 0.35 <= good / len(items) <= 0.5, (brand_id, languages, good)
        items = file.items
        # A good reply keeps the brand's own length, emoji and sign-off policies (else it is rambling).
        for item in items:
            if item.label == "good":
                assert policy_findings(brands[brand_id], item.reply) == [], item.id


def test_the_held_out_files_load_and_meet_their_counts_for_each_brand() -> None:
    """eval/heldout/: at least 80 replies per brand, every kind at least 6 times, about 40% good, for the
    languages the brand declares and as written; its good replies keep the brand's policies; and none of
    its questions or replies is copied from the first set."""
    from persona.checks import policy_findings
    from persona.loader import load_brands

    files = load_labelled(HELDOUT_DIR)
    brands = load_brands(BRANDS_DIR)
    assert set(files) == {"demo", "meridian"}
    first = load_labelled(LABELLED_DIR)
    for brand_id, file in files.items():
        assert len(file.items) >= 80, brand_id
        assert all(i.brand == brand_id for i in file.items)
        declared = getattr(brands[brand_id], "languages", None)
        for languages in (None, declared):
            items, _ = for_brand(file.items, languages)
            kinds = Counter((i.label, i.kind) for i in items)
            for kind in OFFBRAND_KINDS:
                assert kinds["offbrand", kind] >= 6, (brand_id, languages, kind)
            for kind in GOOD_KINDS:
                assert kinds["good", kind] >= 6, (brand_id, languages, kind)
            good = sum(i.label == "good" for i in items)
            assert 0.35 <= good / len(items) <= 0.45, (brand_id, languages, good)
        for item in file.items:
            if item.label == "good":
                assert policy_findings(brands[brand_id], item.reply) == [], item.id
        seen = {text for i in first[brand_id].items for text in (i.question, i.reply)}
        assert not [i.id for i in file.items if i.question in seen or i.reply in seen], brand_id


async def test_make_eval_scores_the_held_out_set_on_request(capsys: pytest.CaptureFixture[str]) -> None:
    from eval.__main__ import main

    argv = ["--only", "labelled", "--limit", "1", "--rounds", "0", "--brand", "meridian"]
    assert await main([*argv, "--set", "heldout", "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["set"] == "heldout" and set(data["brands"]) == {"meridian"}
    assert await main([*argv, "--set", "all"]) == 0
    printed = capsys.readouterr().out
    assert printed.index("Labelled replies through") < printed.index("Held-out set through the streaming guard")
    assert printed.index("Held-out set through the streaming guard") < printed.index("Second held-out set through")
    assert printed.index("Second held-out set through") < printed.index("Third held-out set through")
    assert "(eval/heldout/," in printed and "(eval/heldout2/," in printed and "(eval/heldout3/," in printed
    assert printed.count("meridian per kind") == 4


def test_language_items_are_relabelled_for_the_languages_a_brand_declares() -> None:
    french = _item("fr", "good", "other_language", "Nous torréfions le lundi.", "Quand torréfiez-vous ?")
    french = french.model_copy(update={"question_lang": "fr", "reply_lang": "fr"})
    english = _item("en", "offbrand", "wrong_language", "We roast on Mondays.", "Quand torréfiez-vous ?")
    english = english.model_copy(update={"question_lang": "fr"})
    plain = _item("p", "good", "answer")
    assert expected_language(None, "fr") == "fr" and expected_language(["en", "fr"], "fr") == "fr"
    assert expected_language(["en", "es"], "fr") == "en"
    # No languages declared, or French among them: the labels as written.
    for languages in (None, ["en", "fr"]):
        assert for_brand([french, english, plain], languages) == ([french, english, plain], 0)
    # English only: the French answer is in the wrong language, the English one is right.
    items, changed = for_brand([french, english, plain], ["en"])
    assert changed == 2 and items[2] == plain
    assert (items[0].label, items[0].kind) == ("offbrand", "wrong_language") and "relabelled" in items[0].note
    assert (items[1].label, items[1].kind) == ("good", "other_language")


def test_a_labelled_file_with_a_kind_that_does_not_fit_its_label_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text(
        "brand: demo\nitems:\n  - {id: x1, question: q, reply: r, label: good, kind: competitor, note: n}\n"
    )
    with pytest.raises(ValueError, match="x1: kind 'competitor' is not one of"):
        load_labelled(tmp_path)


def test_the_guard_sees_the_retrieved_facts_and_is_stopped_where_the_server_stops_it() -> None:
    from persona.loader import load_brands

    demo = load_brands(BRANDS_DIR)["demo"]
    context = guard_context(demo, "How long does shipping take?")
    assert context.question == "How long does shipping take?"
    assert any("Mondays and Thursdays" in fact for fact in context.context)
    # Past the length policy: the guard ends the reply (trimmed) and the rest is never fed.
    long = " ".join(f"Sentence number {n} is about our beans." for n in range(1, 9))
    verdict = judge_item(demo, _item("long", "offbrand", "rambling", long))
    assert verdict.trimmed and verdict.flagged and verdict.pieces < len(pieces(long))
    banned = judge_item(demo, _item("vc", "offbrand", "wrong_tone", "Thanks, valued customer, it ships Monday."))
    assert banned.rule is not None and banned.flagged
    ok = judge_item(demo, _item("ok", "good", "answer", "We roast on Mondays and Thursdays."))
    assert not ok.flagged and ok.outcome == "passed" and ok.pieces == len(pieces(ok.item.reply))


async def test_make_eval_reports_the_labelled_figures_and_writes_json_on_a_small_slice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from eval.__main__ import main

    out = tmp_path / "eval.json"
    assert await main(["--only", "labelled", "--limit", "1", "--rounds", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| brand | good | off-brand | precision | recall | FPR |" in printed
    assert "demo per kind" in printed and "meridian per kind" in printed and "| **all** |" in printed
    assert "meridian: languages" in printed or "meridian: no languages declared" in printed
    data = json.loads(out.read_text())
    for brand_id in ("demo", "meridian"):
        figures = data["brands"][brand_id]
        kinds = {row["kind"] for row in figures["kinds"]}
        assert kinds == set(OFFBRAND_KINDS) | set(GOOD_KINDS)
        assert len(figures["verdicts"]) == len(kinds)  # --limit 1: one reply per kind
        assert figures["cost"]["guard_us_per_token"] > 0 and figures["cost"]["pieces"] > 0
        f = figures["figures"]
        assert f["tp"] + f["fn"] == len(OFFBRAND_KINDS) and f["fp"] + f["tn"] == len(GOOD_KINDS)


def test_without_a_guard_nothing_is_flagged_and_every_off_brand_reply_is_missed() -> None:
    from persona.guard import pass_through
    from persona.loader import load_brands

    results = measure(load_brands(BRANDS_DIR), load_labelled(), ["demo"], rounds=1, limit=2, factory=pass_through)
    c = results[0].confusion
    assert c.tp == c.fp == 0 and c.fn > 0 and c.tn > 0
    assert (c.recall, c.fpr, c.precision) == (0.0, 0.0, None)
    assert results[0].cost is not None and results[0].cost.pieces == sum(
        len(pieces(v.item.reply)) for v in results[0].verdicts
    )
