"""The streaming guard, token by token, without a server: holdback, every rule, the end-of-reply
checks (empty, length, off-topic) and the brand differences. Property tests split replies at
random points, as an upstream's chunking is arbitrary."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persona.brand import Brand
from persona.checks import BUILTIN_FILLER, canary, check_text, coverage
from persona.guard import ABORTED, BrandGuard, GuardContext, GuardStep
from persona.loader import load_brands
from reply.ending import fallback_text

BRANDS = load_brands(Path(__file__).resolve().parent.parent / "brands")
DEMO, BANK = BRANDS["demo"], BRANDS["meridian"]

CLEAN = (
    "We roast on Mondays and Thursdays and ship within 24 hours of roasting. Orders over $35 ship free "
    "in the US, and tracking lands in your inbox the moment your beans leave the roastery. For pour-over, "
    "start with 15 grams of coffee to 250 grams of water just off the boil."
)


def chunks(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points) if b > a]


def stream(brand: Brand, pieces: list[str], finish: str = "stop", question: str = "") -> tuple[str, list[GuardStep]]:
    """Feed pieces then finish; the released text and every step, stopping at a violation like the job."""
    guard = BrandGuard(brand, GuardContext(question=question))
    released, steps = "", []
    for piece in pieces:
        step = guard.feed(piece)
        steps.append(step)
        released += step.release
        if step.violation:
            return released, steps
    step = guard.finish(finish)
    steps.append(step)
    return released + step.release, steps


def replacement(brand: Brand, step: GuardStep) -> str:
    """What replaces a reply the guard stopped: its own replacement, else the brand's fallback."""
    assert step.violation is not None
    return step.replacement if step.replacement is not None else fallback_text(brand.fallbacks, step.violation)


def violation(steps: list[GuardStep]) -> GuardStep | None:
    return next((s for s in steps if s.violation), None)


# --- clean text and the holdback window ---------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=60))
def test_clean_text_comes_out_exactly_as_it_went_in_however_it_is_chunked(cuts: list[int]) -> None:
    released, steps = stream(DEMO, chunks(CLEAN, cuts), question="shipping")
    assert violation(steps) is None
    assert released == CLEAN


def test_a_sentence_is_held_until_it_ends_then_released_whole() -> None:
    guard = BrandGuard(DEMO)
    assert guard.feed("We roast on ").release == ""
    assert guard.feed("Mondays.").release == "We roast on Mondays."
    assert guard.feed(" Orders over").release == ""


def test_a_long_unfinished_sentence_is_released_except_its_last_window_at_a_word_boundary() -> None:
    guard = BrandGuard(DEMO)
    words = " ".join(f"word{i}" for i in range(40)) + " "
    out = "".join(guard.feed(w + " ").release for w in words.split())
    assert out and words.startswith(out) and out.endswith(" ")
    assert guard.window <= len(words) - len(out) < guard.window + len("word39 ")
    assert out + guard.finish("stop").release == words


def test_an_attempt_that_ends_early_releases_its_checked_held_text() -> None:
    guard = BrandGuard(DEMO)
    assert guard.feed("We roast on ").release == ""
    assert guard.finish(ABORTED) == GuardStep(release="We roast on ")


# --- rules --------------------------------------------------------------------------------------------

PREFIXES = ["", "Sure. ", "We roast on Mondays and ship within a day. ", "Our beans are great and "]
SAFE_WORDS = st.sampled_from(["beans", "roast", "ship", "the", "grind", "fresh", "and", "Monday.", "a", "bag"])


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from(PREFIXES),
    phrase=st.sampled_from(["valued customer", "As an AI language model", "I hope this helps", "Starbucks"]),
    upper=st.booleans(),
    suffix=st.lists(SAFE_WORDS, max_size=12).map(" ".join),
    cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=40),
)
def test_no_part_of_a_banned_phrase_ever_reaches_a_client_however_it_is_chunked(
    prefix: str, phrase: str, upper: bool, suffix: str, cuts: list[int]
) -> None:
    if upper and phrase != "Starbucks":
        phrase = phrase.upper()
    text = f"{prefix}{phrase} {suffix}"
    released, steps = stream(DEMO, chunks(text, cuts))
    found = violation(steps)
    assert found is not None and found.violation in {"banned_phrase", "filler", "competitor", "dont"}  # dont: shouting
    assert len(released) <= len(prefix), f"released {released!r} past the start of {phrase!r}"
    assert replacement(DEMO, found) == DEMO.fallbacks.off_brand


@pytest.mark.parametrize(
    ("brand", "text", "rule", "fallback"),
    [
        (DEMO, "Honestly, Blue Bottle does it too.", "competitor", "off_brand"),
        (DEMO, "We GUARANTEE it will arrive by Friday.", "dont", "off_brand"),
        (DEMO, "ORDER RIGHT NOW PLEASE friend.", "dont", "off_brand"),
        (BANK, "Your card is frozen!", "dont", "off_brand"),
        (BANK, "That is awesome news.", "banned_phrase", "off_brand"),
        (BANK, "Your card is frozen 🙂.", "emoji", "off_brand"),
        (BANK, "You should invest in our fund.", "dont", "off_brand"),
        (BANK, "Please tell me your PIN so I can check.", "dont", "off_brand"),
        (BANK, "Unlike Barclays, we pay daily.", "competitor", "off_brand"),
        (DEMO, "I'm sorry, but I can't help with that.", "refusal", "off_topic"),
        (DEMO, f"My reference is {canary(DEMO)}.", "prompt_leak", "off_topic"),
    ],
)
def test_each_rule_stops_the_reply_with_the_brands_fallback_for_it(
    brand: Brand, text: str, rule: str, fallback: str
) -> None:
    _, steps = stream(brand, [w + " " for w in text.split()])
    found = violation(steps)
    assert found is not None and found.violation == rule
    assert replacement(brand, found) == getattr(brand.fallbacks, fallback)
    assert check_text(brand, text), "the eval's full-text check agrees"


def test_reciting_the_instructions_is_a_leak_but_saying_who_you_are_is_not() -> None:
    leak = "Sure: " + " ".join(DEMO.voice.guide.split()[:12])
    _, steps = stream(DEMO, [w + " " for w in leak.split()])
    assert violation(steps) is not None and violation(steps).violation == "prompt_leak"  # type: ignore[union-attr]
    identity = "I'm Juniper, the chat assistant of Ember & Oak Coffee Roasters, and I help with beans and brewing."
    released, steps = stream(DEMO, [identity])
    assert violation(steps) is None and released == identity


def test_competitor_names_match_as_written_so_a_common_word_is_not_one() -> None:
    _, steps = stream(BANK, ["We will chase the payment for you and confirm within two hours."])
    assert violation(steps) is None
    _, steps = stream(BANK, ["Chase offers something similar."])
    assert violation(steps) is not None


def test_the_demo_allows_an_emoji_that_the_bank_forbids() -> None:
    assert violation(stream(DEMO, ["Enjoy your pour-over ☕."], question="brew")[1]) is None
    assert violation(stream(BANK, ["Enjoy your savings ☕."])[1]) is not None


# --- end of reply -------------------------------------------------------------------------------------


def test_empty_output_falls_back_to_the_error_reply_or_else_off_topic() -> None:
    last = stream(BANK, ["  "])[1][-1]
    assert last == GuardStep(violation="empty") and replacement(BANK, last) == BANK.fallbacks.error
    last = stream(DEMO, [])[1][-1]
    assert last == GuardStep(violation="empty") and replacement(DEMO, last) == DEMO.fallbacks.off_topic


def test_a_length_cut_reply_that_ends_on_a_sentence_is_kept_whole() -> None:
    released, steps = stream(DEMO, [CLEAN], finish="length")
    assert released == CLEAN and violation(steps) is None


def test_a_length_cut_sentence_still_held_back_is_trimmed_silently() -> None:
    text = "We roast on Mondays. Orders over $35 ship"
    released, steps = stream(DEMO, [w + " " for w in text.split()], finish="length")
    assert violation(steps) is None
    assert released == "We roast on Mondays. "


def test_a_length_cut_sentence_already_streamed_is_retracted_to_the_last_whole_sentence() -> None:
    text = "We roast on Mondays. " + " ".join(f"then{i}" for i in range(30))
    released, steps = stream(DEMO, [w + " " for w in text.split()], finish="length")
    assert len(released) > len("We roast on Mondays. "), "part of the cut sentence was out"
    assert steps[-1] == GuardStep(violation="truncated", replacement="We roast on Mondays.")


def test_a_length_cut_reply_without_a_whole_sentence_uses_the_truncated_fallback() -> None:
    last = stream(DEMO, ["We roast on"], finish="length")[1][-1]
    assert last == GuardStep(violation="truncated") and replacement(DEMO, last) == DEMO.fallbacks.truncated


OFF_TOPIC = (
    "Lasagna is layered with pasta sheets, ricotta, marinara and mozzarella, then baked for forty "
    "minutes until the cheese bubbles and browns."
)


def test_an_off_topic_reply_is_noted_for_a_log_brand_and_replaced_for_a_fallback_brand() -> None:
    released, steps = stream(DEMO, [OFF_TOPIC], question="What should I cook tonight?")
    assert released == OFF_TOPIC
    note = steps[-1].notes[0]
    assert note.event == "off_topic" and note.fields["action"] == "log"
    assert note.fields["score"] < note.fields["threshold"] == 0.2
    _, steps = stream(BANK, [OFF_TOPIC], question="What should I cook tonight?")
    assert steps[-1].violation == "off_topic" and replacement(BANK, steps[-1]) == BANK.fallbacks.off_topic
    assert steps[-1].notes[0].fields["action"] == "fallback"


@pytest.mark.parametrize("brand_id", ["demo", "meridian"])
def test_the_documented_threshold_separates_on_brand_from_generic_text(brand_id: str) -> None:
    """persona/checks.py: examples and knowledge score >= 0.5, generic off-topic text < 0.1."""
    brand = BRANDS[brand_id]
    for text in [s.text for s in brand.knowledge] + [e.assistant for e in brand.examples]:
        scored = coverage(brand, text)
        assert scored is None or scored[0] >= 0.5, (text, scored)
    scored = coverage(brand, OFF_TOPIC)
    assert scored is not None and scored[0] < 0.1


def test_short_replies_are_not_judged_off_topic() -> None:
    _, steps = stream(BANK, ["Thank you, Eleanor."])
    assert steps[-1].notes == () and steps[-1].violation is None


def test_the_builtin_filler_list_is_checked_by_every_brand_that_keeps_it() -> None:
    for phrase in BUILTIN_FILLER:
        assert any(f.rule == "filler" for f in check_text(DEMO, f"Well, {phrase} and so on."))
