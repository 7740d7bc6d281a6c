"""Grounded facts (issue 12): figures, names and contact details in a reply are checked against what
the reply was given. Extraction and normalisation tables; good replies that restate the knowledge in
other words pass, invented or wrong facts are caught; streamed through the real ``BrandGuard`` in
random chunkings, no prefix of an unsupported fact ever goes out, and a grounded one goes out the
moment the word after it begins."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persona.brand import Brand
from persona.facts import MAX_REGION, FactScanner, extract, grounding, unsupported
from persona.guard import ABORTED, BrandGuard, GuardContext, GuardStep
from persona.loader import load_brands
from reply.ending import fallback_text
from testkit import T, examples
from testkit.clients import assert_well_formed, joined_text, negotiate, ws_turn
from testkit.fake_openai import FakeOpenAI, Reply
from testkit.server import ServerFactory

SHIPPED = load_brands(Path(__file__).resolve().parent.parent / "brands")


def unlimited(brand: Brand, **facts: object) -> Brand:
    """``brand`` with its length policy out of the way and ``guard.facts`` settings changed."""
    guard = brand.guard.model_copy(update={"facts": brand.guard.facts.model_copy(update=facts)})
    length = brand.length.model_copy(update={"max_sentences": 100})
    return brand.model_copy(update={"guard": guard, "length": length})


DEMO, BANK = unlimited(SHIPPED["demo"]), unlimited(SHIPPED["meridian"])
BRANDS = {"demo": DEMO, "meridian": BANK}


def keys(text: str) -> list[tuple[object, ...]]:
    return [f.keys[0] for f in extract(text)]


def stream(brand: Brand, pieces: list[str], question: str = "") -> tuple[str, list[GuardStep]]:
    guard = BrandGuard(brand, GuardContext(question=question))
    released, steps = "", []
    for piece in pieces:
        step = guard.feed(piece)
        steps.append(step)
        released += step.release
        if step.violation:
            return released, steps
    step = guard.finish("stop")
    steps.append(step)
    return released + step.release, steps


def words(text: str) -> list[str]:
    return [w + " " for w in text.split(" ")]


def chunks(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points) if b > a]


def violation(steps: list[GuardStep]) -> str | None:
    return next((s.violation for s in steps if s.violation), None)


# --- extraction and normalisation -----------------------------------------------------------------------

SAME = [
    ("$18", "18 dollars"),
    ("£25,000", "£25k"),
    ("£25,000", "25,000 pounds"),
    ("50p", "fifty pence"),
    ("3\u20135 business days", "three to five working days"),
    ("3-5 business days", "between 3 and 5 business days"),
    ("9am", "09:00"),
    ("9 a.m.", "9:00"),
    ("5pm", "17:00"),
    ("4.1%", "4.1 per cent"),
    ("4.1%", "4.1 percent"),
    ("0800 123 4567", "0800-123-4567"),
    ("0800 123 4567", "+44 800 123 4567"),
    ("24 hours", "twenty-four hours"),
    ("a three-minute brew", "3 minutes"),
    ("15 grams", "15g"),
    ("12 March 2026", "2026-03-12"),
    ("March 12", "12th of March"),
    ("Hello@Ember.example", "hello@ember.example"),
    ("https://www.ember.example/help/", "ember.example/help (www.ember.example/help)"),
    ("Mondays", "Monday"),
    ("two weeks", "14 days"),
    ("24 hours", "one day"),
    ("one year", "12 months"),
    ("1.5 kg", "1,500 grams"),
    ("Monday to Friday", "weekdays"),
    ("250 grams", "two hundred and fifty grams"),
    ("105 days", "one hundred and five days"),
]


@pytest.mark.parametrize(("one", "other"), SAME)
def test_a_fact_written_two_ways_normalises_to_the_same_key(one: str, other: str) -> None:
    assert keys(one) and keys(one)[0] in [k for f in extract(other) for k in f.keys]


TABLE = [
    ("Orders over $35 ship free", [("money", "USD", 35.0)]),
    ("a £1,000 minimum deposit", [("money", "GBP", 1000.0)]),
    ("3.10% AER", [("percent", 3.1)]),
    ("every two or four weeks", [("quantity", "minute", 20160.0, 20160.0), ("quantity", "minute", 40320.0, 40320.0)]),
    ("one to four working days", [("quantity", "working_day", 1.0, 4.0)]),
    ("open 7am to 4pm", [("time", 420), ("time", 960)]),
    ("9:00 to 17:00 Monday to Friday", [("time", 540), ("time", 1020), ("weekday_range", "monday", "friday")]),
    ("at 12 Foundry Lane", [("address", 12, "foundry lane")]),
    ("open on weekends", [("weekday_range", "saturday", "sunday")]),
    ("call 0800 123 4567, any hour", [("phone", "001234567")]),
    # Not facts: numbers without a unit, model names, list markers, ordinary words, a derived ratio.
    ("roughly 1:16.7, a 1:15 ratio", []),
    ("Step 2: use a V60 from 2024.", []),
    ("One of our favourites, for sure.", []),
    ("1. Grind the beans. 2. Pour.", []),
]


@pytest.mark.parametrize(("text", "expected"), TABLE)
def test_extraction_finds_each_fact_with_its_normalised_key(text: str, expected: list[tuple[object, ...]]) -> None:
    assert keys(text) == expected


def test_an_ambiguous_clock_time_is_grounded_by_either_half_of_the_day() -> None:
    ground = grounding(BANK)  # knowledge: 9:00 to 17:00
    assert unsupported("We close at 5:00.", ground) == []
    assert unsupported("We close at 5pm.", ground) == []
    assert [f.text for f in unsupported("We close at 9pm today.", ground)] == ["9pm"]


def test_a_single_value_is_grounded_by_a_range_that_ends_on_it_but_not_by_one_inside_it() -> None:
    ground = grounding(BANK)  # knowledge: international transfers take one to four working days
    assert unsupported("They take up to four working days.", ground) == []
    assert unsupported("They take 4 days.", ground) == []  # days restate working days
    assert [f.text for f in unsupported("They take two working days.", ground)] == ["two working days"]


def test_a_product_name_that_only_looks_like_the_brands_is_unsupported() -> None:
    ground = grounding(BANK)
    assert unsupported("The Easy Saver and the Fixed Saver, from Meridian.", ground) == []
    assert unsupported("Open a Meridian Easy Saver in the Meridian app.", ground) == []
    for invented in ("Fixed Saver Plus", "Everyday Saver", "Easy Access Saver"):
        assert [f.text for f in unsupported(f"The {invented} pays monthly.", ground)] == [invented]
    # Capitalised words that use no word of the brand's names are not judged (too many false alarms),
    # and neither is the brand's own name before them.
    assert unsupported("Premium Gold Account holders, Good day.", ground) == []
    assert unsupported("Log in to Meridian Online Banking.", ground) == []
    assert [f.text for f in unsupported("The Meridian Easy Saver Plus is new.", ground)] == ["Meridian Easy Saver Plus"]


def test_weekends_and_named_ranges_ground_each_day_but_weekdays_only_the_range() -> None:
    demo, bank = grounding(DEMO), grounding(BANK)  # the cafe: weekdays and weekends; branches: Monday to Friday
    assert unsupported("Open on Saturdays and Sundays, 8am to 2pm.", demo) == []
    assert unsupported("Open Monday to Friday.", demo) == []
    assert [f.text for f in unsupported("We roast every Tuesday.", demo)] == ["Tuesday"]
    assert unsupported("Branches are open on Wednesday.", bank) == []
    assert [f.text for f in unsupported("Branches are open on Sunday.", bank)] == ["Sunday"]


def test_a_translated_reply_keeps_the_names_after_its_own_articles() -> None:
    ground = grounding(BANK)
    assert unsupported("El Easy Saver paga un 3,10 % TAE. Il Fixed Saver offre il 4,05% AER.", ground) == []


def test_the_conversation_grounds_what_the_user_said() -> None:
    ground = grounding(DEMO, ("My order 4471 had 3 bags, I paid $54.",))
    assert unsupported("Your 3 bags for $54 are on their way.", ground) == []
    assert unsupported("Your 4 bags for $54 are on their way.", grounding(DEMO)) != []


def test_the_wrong_value_of_a_known_figure_is_told_apart_from_an_invented_one() -> None:
    ground = grounding(BANK)
    wrong, invented = unsupported("The daily limit is £10,000.", ground)[0], unsupported("It costs 15%.", ground)[0]
    assert ground.verdict(wrong) == "contradicts"  # the bank states GBP amounts, not this one
    assert ground.verdict(invented) == "contradicts"  # and percentages
    assert ground.verdict(extract("It weighs 2 kg.").__next__()) == "unsupported"


# --- good replies pass, wrong facts are caught ------------------------------------------------------------

GOOD = {
    "demo": [
        "We roast on Mondays and Thursdays and ship within 24 hours of roasting.",
        "Orders over 35 dollars ship free in the US.",
        "Orders over $35.00 ship free within the US, and tracking lands in your inbox.",
        "Our Roaster's Choice subscription sends a fresh bag every 2 or 4 weeks.",
        "Start with 15g of coffee to 250g of water and a 3-minute brew.",
        "For a French press, go coarser and steep for 4 minutes.",
        "Try our Colombian Huila or the Ethiopian Yirgacheffe; the Hearth blend is great for espresso.",
        "Our Swiss Water decaf still tastes like coffee!",
        "Tell us within thirty days and we'll replace it or refund you.",
        "Our cafe at 12 Foundry Lane opens at 07:00 and closes at 16:00 on weekdays.",
        "On weekends the cafe is open 8 a.m. to 2 p.m.",
        "We roast every Monday and Thursday.",
        "Hey there, coffee friend! I'm Juniper from Ember & Oak.",
    ],
    "meridian": [
        "The Easy Saver currently pays 3.10% AER variable on balances up to £250,000.",
        "The Easy Saver pays 3.1 per cent AER variable, with interest calculated daily and paid monthly.",
        "The Fixed Saver pays 4.05% AER fixed for twelve months from a minimum deposit of £1,000.",
        "Please call 0800 1234567, which is available 24 hours a day.",
        "You may also call +44 800 123 4567.",
        "A replacement card arrives within three business days.",
        "Faster Payments within the UK usually arrive within 2 hours.",
        "The daily online transfer limit is £25k.",
        "International transfers take 1 to 4 working days.",
        "Branches are open 9am to 5pm Monday to Friday and 9am to 1pm on Saturday.",
        "Branches are open on Wednesday from 9:00 to 17:00.",
        "Mortgage appointments last about one hour, in branch or by video call.",
        "Good day. I am the Meridian Assistant. The Meridian app lets you freeze a card immediately.",
    ],
}
# "I don't know" is not a wrong fact: a hedge with no figure passes.
UNSURE = {
    "demo": ["I don't have the exact delivery date to hand, but we ship within a day of roasting."],
    "meridian": ["I do not have the current rate for that product. Please call 0800 123 4567."],
}
WRONG = {
    "demo": [
        "Orders over $50 ship free in the US.",
        "We ship within 48 hours of roasting.",
        "Shipping takes 3\u20135 business days.",
        "A bag of Hearth costs $18.",
        "Our Roaster's Choice subscription sends a bag every three weeks.",
        "Start with 20 grams of coffee to 300 grams of water.",
        "Tell us within 60 days and we'll refund you.",
        "Our cafe opens at 6am on weekdays.",
        "The cafe is at 14 Foundry Lane.",
        "We roast on Tuesdays and Fridays.",
        "Try our Ethiopian Sidamo, it's lovely.",
        "Our spring sale takes 10% off.",
        "Email us at hello@emberandoak.com any time.",
        "Visit https://emberandoak.example/shop for more.",
    ],
    "meridian": [
        "The Easy Saver pays 3.5% AER variable.",
        "The Fixed Saver pays 4.05% AER fixed for 24 months.",
        "The Fixed Saver needs a minimum deposit of £500.",
        "A replacement card arrives within five working days.",
        "International transfers take 2 to 5 working days.",
        "Please call 0800 123 4568 at any hour.",
        "Branches are open 8:30 to 17:00 Monday to Friday.",
        "Branches are open 9:00 to 13:00 on Sunday.",
        "The Fixed Saver Plus pays 4.05% AER fixed.",
        "The Everyday Saver pays interest monthly.",
        "Faster Payments usually arrive within 30 minutes.",
        "Our overdraft fee is £5 per day.",
        "Email fraud@meridianbank.co.uk to report it.",
    ],
}
CASES = [(b, t) for b, texts in GOOD.items() for t in texts] + [(b, t) for b, texts in UNSURE.items() for t in texts]


@pytest.mark.parametrize(("brand_id", "text"), CASES)
def test_a_reply_restating_the_brands_facts_in_other_words_passes_untouched(brand_id: str, text: str) -> None:
    released, steps = stream(BRANDS[brand_id], words(text))
    assert violation(steps) is None
    assert released == text + " "


@pytest.mark.parametrize(("brand_id", "text"), [(b, t) for b, texts in WRONG.items() for t in texts])
def test_a_reply_with_an_invented_or_wrong_fact_gets_the_unsure_fallback(brand_id: str, text: str) -> None:
    brand = BRANDS[brand_id]
    _, steps = stream(brand, words(text))
    assert violation(steps) == "unsupported_fact"
    stopped = next(s for s in steps if s.violation)
    assert [n.event for n in stopped.notes] == ["unsupported_fact"]
    assert fallback_text(brand.fallbacks, "unsupported_fact") == brand.fallbacks.unsure


def test_a_brand_without_an_unsure_fallback_gets_off_brand() -> None:
    fallbacks = DEMO.fallbacks.model_copy(update={"unsure": None})
    assert fallback_text(fallbacks, "unsupported_fact") == DEMO.fallbacks.off_brand


def test_the_shipped_brands_own_words_are_all_grounded() -> None:
    for brand in BRANDS.values():
        texts = [s.text for s in brand.knowledge] + [e.assistant for e in brand.examples]
        for text in texts:
            _, steps = stream(brand, words(text))
            assert violation(steps) is None, text


def test_with_the_check_off_or_a_kind_left_out_nothing_is_judged() -> None:
    off = unlimited(SHIPPED["demo"], check=False)
    assert violation(stream(off, words("Orders over $50 ship free."))[1]) is None
    no_money = unlimited(SHIPPED["demo"], kinds=["percent", "quantity"])
    assert violation(stream(no_money, words("Orders over $50 ship free."))[1]) is None
    assert violation(stream(no_money, words("We ship within 48 hours."))[1]) == "unsupported_fact"


def test_with_action_log_nothing_is_held_and_the_fact_is_noted() -> None:
    brand = unlimited(SHIPPED["demo"], action="log")
    guard = BrandGuard(brand)
    assert guard.feed("Orders over $5").release == "Orders over $5"
    step = guard.feed("0 ship free. ")
    assert step.violation is None and step.release == "0 ship free. "
    assert [(n.event, n.fields["fact"]) for n in step.notes] == [("unsupported_fact", "money '$50' (contradicts)")]
    assert guard.finish("stop").violation is None


# --- streaming: what is held, and for how long --------------------------------------------------------------

PREFIXES = ["", "Sure, ", "Happy to help. ", "Good news: ", "We roast on Mondays and "]
SUFFIXES = ["", " and that is all.", ", I promise.", ". Anything else?"]  # (no contraction: the bank forbids them)
INVENTED = {
    "demo": ["$50", "48 hours", "3\u20135 business days", "six minutes", "6am", "Tuesdays", "Ethiopian Sidamo", "10%"],
    "meridian": ["4.5%", "£500", "five working days", "0800 123 4568", "8:30", "Fixed Saver Plus", "Sunday"],
}
GROUNDED = {
    "demo": ["$35", "24 hours", "two or four weeks", "four minutes", "7am", "Thursdays", "Colombian Huila"],
    "meridian": ["3.10%", "£25,000", "three working days", "0800 123 4567", "17:00", "Fixed Saver", "Saturday"],
}


@settings(max_examples=examples(300), deadline=None)
@given(
    brand_id=st.sampled_from(["demo", "meridian"]),
    data=st.data(),
    prefix=st.sampled_from(PREFIXES),
    suffix=st.sampled_from(SUFFIXES),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=30),
)
def test_no_prefix_of_an_unsupported_fact_ever_reaches_a_client_however_it_is_chunked(
    brand_id: str, data: st.DataObject, prefix: str, suffix: str, cuts: list[int]
) -> None:
    fact = data.draw(st.sampled_from(INVENTED[brand_id]))
    text = f"{prefix}it is {fact}{suffix}"
    released, steps = stream(BRANDS[brand_id], chunks(text, cuts))
    assert violation(steps) == "unsupported_fact", text
    assert len(released) <= len(prefix) + len("it is "), f"released {released!r} past the start of {fact!r}"


@settings(max_examples=examples(300), deadline=None)
@given(
    brand_id=st.sampled_from(["demo", "meridian"]),
    data=st.data(),
    prefix=st.sampled_from(PREFIXES),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=30),
)
def test_a_grounded_fact_goes_out_as_soon_as_the_next_character_shows_it_is_complete(
    brand_id: str, data: st.DataObject, prefix: str, cuts: list[int]
) -> None:
    fact = data.draw(st.sampled_from(GROUNDED[brand_id]))
    head = f"{prefix}it is {fact}"
    text = head + " right for you"  # no unit, number or name begins with "r": " r" completes the fact
    brand = holding_rules_by_match(BRANDS[brand_id])
    guard = BrandGuard(brand)
    released = fed = ""
    for piece in chunks(text, cuts):
        step = guard.feed(piece)
        assert step.violation is None
        released, fed = released + step.release, fed + piece
        if len(fed) > len(head) + 1:
            assert released.startswith(head), f"{fact!r} still held after {fed!r}"
    assert released + guard.finish("stop").release == text


def holding_rules_by_match(brand: Brand) -> Brand:
    """The bank holds whole sentences (``hold.rules: sentence``); these tests look at the facts' hold."""
    hold = brand.guard.hold.model_copy(update={"rules": "match", "length": "retract"})
    guard = brand.guard.model_copy(update={"hold": hold})
    return brand.model_copy(update={"guard": guard})


ORDINARY = "We roast the beans slowly, with care and love, and we ship them the day after roasting. "


@pytest.mark.parametrize("brand_id", ["demo", "meridian"])
def test_the_facts_check_adds_no_hold_to_text_without_a_possible_fact(brand_id: str) -> None:
    on = BrandGuard(holding_rules_by_match(BRANDS[brand_id]))
    off = BrandGuard(holding_rules_by_match(unlimited(SHIPPED[brand_id], check=False)))
    for piece in chunks(ORDINARY, list(range(0, len(ORDINARY), 3))):
        assert on.feed(piece).release == off.feed(piece).release, piece


def test_a_possible_fact_is_held_from_its_first_character_and_released_when_ruled_out() -> None:
    guard = BrandGuard(DEMO)
    assert guard.feed("Shipping takes ").release == "Shipping takes "
    assert guard.feed("fo").release == ""  # "fo" of "four"
    assert guard.feed("ur").release == ""
    assert guard.feed(" min").release == ""  # "four min…" could still be "four minutes"
    assert guard.feed("t ").release == "four mint "  # not a unit: released, and nothing was a fact
    assert guard.feed("leaf. ").release == "leaf. "


def test_a_fact_split_mid_number_is_held_until_the_number_is_complete() -> None:
    guard = BrandGuard(BANK)  # the bank also holds unfinished sentences; a fact must still be complete
    released = "".join(guard.feed(p).release for p in ["The limit is £2", "5,00", "0. Transfers abroad"])
    assert released == "The limit is £25,000. "
    guard = BrandGuard(BANK)
    released = "".join(guard.feed(p).release for p in ["The limit is £2", "5,00"])
    step = guard.feed("1. Transfers abroad")
    assert released == "" and step.violation == "unsupported_fact"


def test_an_attempt_that_ends_early_never_releases_an_unsupported_fact() -> None:
    guard = BrandGuard(DEMO)
    assert guard.feed("Free shipping over ").release == "Free shipping over "
    assert guard.feed("$50").release == ""
    assert guard.finish(ABORTED) == GuardStep()
    guard = BrandGuard(DEMO)
    guard.feed("Free shipping over ")
    guard.feed("$35")
    assert guard.finish(ABORTED).release == "$35"


def test_a_fact_at_the_very_end_of_the_reply_is_checked() -> None:
    released, steps = stream(DEMO, ["Free shipping over ", "$50"])
    assert violation(steps) == "unsupported_fact" and released == "Free shipping over "
    released, steps = stream(DEMO, ["Free shipping over ", "$35"])
    assert violation(steps) is None and released == "Free shipping over $35"


def test_the_scanner_keeps_only_the_open_fact_however_long_the_reply() -> None:
    scanner = FactScanner(grounding(DEMO), ["money", "quantity", "name"])
    sentence = "We roast on Mondays and ship within 24 hours, to the US, for our Colombian Huila fans. "
    at = 0
    for _ in range(300):
        for piece in chunks(sentence, list(range(3, len(sentence), 4))):
            assert scanner.feed(piece, at) is None
            at += len(piece)
            assert len(scanner._tail) <= MAX_REGION + 8  # the per-token cost stays flat
    assert scanner.finish(at) is None


# --- end to end: a real server, the real openai SDK, a fake model that invents a price ---------------------


@pytest.mark.timeout(30)
async def test_an_invented_price_never_reaches_the_client_and_the_reply_becomes_the_unsure_fallback(
    fake: FakeOpenAI, servers_on_fake: ServerFactory
) -> None:
    server = await servers_on_fake()
    grounded = "Orders over $35 ship free in the US. "
    fake.enqueue(Reply(text=grounded + "A bag of Hearth is $18, " + "and so good " * 40, delay_s=0.01 * T))
    n = await negotiate(server.base_url)
    events = await ws_turn(server.ws_url, n, "How much is a bag?")
    assert_well_formed(events)
    streamed = "".join(e["text"] for e in events if e["type"] == "delta")
    assert streamed.startswith(grounded), "the grounded figure went out at once"
    assert "$18" not in streamed and not streamed.endswith("$"), "nothing of the invented one did"
    unsure = server.runtime.brands["demo"].fallbacks.unsure
    assert [e["type"] for e in events[-2:]] == ["retract", "done"]
    assert events[-2]["reason"] == "unsupported_fact" and events[-2]["text"] == unsure
    assert events[-1]["finish_reason"] == "fallback" and joined_text(events) == unsure
    await fake.wait_for_open_connections(0, timeout=2 * T)  # the upstream call was stopped


FUZZ_WORDS = ["am", "pm", "Saver", "Easy", "Fixed", "one", "four", "to", "or", "and", "weeks", "days", "hours"]
FUZZ_WORDS += ["per cent", "www.", "http://", "Monday", "March", "12th", "the", "We", "I", "Lane", "g", "kg", "k"]
FUZZ_WORDS += ["p", "£25,000", "0800 123 4567", "a.m.", "\u2013", "\u2019"]
FUZZ_ALPHABET = st.sampled_from([*"0123456789$£€%+-:.,;@/ ()'\"\n", *FUZZ_WORDS])


@settings(max_examples=examples(300), deadline=None)
@given(
    brand_id=st.sampled_from(["demo", "meridian"]),
    parts=st.lists(FUZZ_ALPHABET, max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=20),
)
def test_any_text_in_any_chunking_is_either_released_whole_or_replaced(
    brand_id: str, parts: list[str], cuts: list[int]
) -> None:
    text = " ".join(parts)
    released, steps = stream(BRANDS[brand_id], chunks(text, cuts))
    if violation(steps) is None:
        assert released == text
    else:
        assert text.startswith(released)


def test_a_reply_with_no_spaces_at_all_keeps_the_scanner_bounded() -> None:
    scanner = FactScanner(grounding(DEMO), ["money", "quantity", "name", "url"])
    at = 0
    for piece in ["https://ember.example/", *["abcd/1234" for _ in range(500)]]:
        scanner.feed(piece, at)
        at += len(piece)
        assert len(scanner._tail) <= 2 * MAX_REGION


def test_figures_glued_after_letters_hold_nothing() -> None:
    """ "word0 word1 …" (and "mp3", "X1") are tokens, not facts: each goes out with the next space, never
    a run held to the region's cap. A figure after a hyphen ("mid-2025") and an email's "@" still hold."""
    text = " ".join(f"word{i}" for i in range(40))
    guard = BrandGuard(DEMO, GuardContext(question="How long does shipping take?"))
    released = ""
    for piece in words(text):
        released += guard.feed(piece).release
    assert released == text + " ", "every word went out by the next one"
    scanner = FactScanner(grounding(DEMO, ()), ["date", "email"])
    for word, holds in [("mp3 ", False), ("X1 ", False), ("mid-2025", True), ("hello@", True)]:
        scanner.feed(" " + word, 0)
        assert (scanner.held_from() is not None) is holds, word
        scanner.finish(len(word) + 1)


def test_a_number_in_words_past_a_hundred_is_read_whole() -> None:
    """ "two hundred and fifty grams" is 250 g, not "hundred and fifty grams" (150 g, which once replaced
    `make bench`'s every reply as a contradicted fact)."""
    assert keys("two hundred and fifty grams of water") == [("quantity", "gram", 250.0, 250.0)]
    text = "Use fifteen grams of coffee to two hundred and fifty grams of water."
    released, steps = stream(DEMO, words(text))
    assert not any(step.violation for step in steps) and released == text + " "


@pytest.mark.parametrize(
    ("text", "unsupported_facts"),
    [
        # The roaster answers in Spanish, French and German: its English facts ground the same facts
        # written in those languages, and a different figure in them is caught.
        ("La cafetería abre de 7 a 16 h entre semana.", []),
        ("La cafetería abre de 9 a 20 h entre semana.", ["20 h"]),
        ("Le café ouvre de 8 h à 14 h le week-end.", []),
        ("Le café ouvre de 9 h à 20 h en semaine.", ["9 h", "20 h"]),
        ("Das Café hat werktags von 7 bis 16 Uhr geöffnet.", []),
        ("Das Café hat werktags von 9 bis 20 Uhr geöffnet.", ["20 Uhr"]),
        ("El envío es gratis a partir de 35 dólares.", []),
        ("El envío es gratis a partir de 50 dólares.", ["50 dólares"]),
        ("La livraison est offerte dès 35 $.", []),
        ("Ab 50 Dollar ist der Versand kostenlos.", ["50 Dollar"]),
        ("Puedes recibirla cada dos semanas o cada cuatro.", []),
        ("Puedes recibir la suscripción cada tres semanas.", ["tres semanas"]),
        ("Du kannst das Abo alle zwei oder vier Wochen bekommen.", []),
        ("Nous expédions sous 24 heures.", []),
        ("Wir versenden innerhalb von 48 Stunden.", ["48 Stunden"]),
        ("Tienes 30 días para avisarnos.", []),
        ("Cuesta 18,50 €.", ["18,50 €"]),
    ],
)
def test_facts_written_in_the_brands_other_languages_are_checked_too(text: str, unsupported_facts: list[str]) -> None:
    ground = grounding(BRANDS["demo"])
    assert [f.text for f in unsupported(text, ground)] == unsupported_facts


# --- names: held only from a name word; the capitalised words before it are judged with it ----------------

CAPITALISED = "Sure thing! Ref7 Great Question, Happy Days: Big Bold Flavours in every Bag. "


@pytest.mark.parametrize("brand_id", ["demo", "meridian"])
def test_a_capitalised_word_that_is_no_name_word_is_not_held_by_the_facts_check(brand_id: str) -> None:
    on = BrandGuard(holding_rules_by_match(BRANDS[brand_id]))
    off = BrandGuard(holding_rules_by_match(unlimited(SHIPPED[brand_id], check=False)))
    for piece in words(CAPITALISED):
        assert on.feed(piece).release == off.feed(piece).release, piece


def test_a_reply_whose_first_word_is_an_ordinary_capitalised_word_releases_it_at_once() -> None:
    for first in ("Ref7", "Sure", "Happy", "Thanks"):
        assert BrandGuard(DEMO).feed(first).release == first


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("You can open a Fixed Saver online. ", None),  # "Fixed" is no name word: judged with "Saver"
        ("You can open an Everyday Saver online. ", "unsupported_fact"),  # "Saver" alone is a known part
        ("You can open a Fixed Saver Plus online. ", "unsupported_fact"),
    ],
)
def test_the_capitalised_words_before_a_name_word_are_judged_with_it(text: str, expected: str | None) -> None:
    released, steps = stream(holding_rules_by_match(BANK), words(text))
    assert violation(steps) == expected, released
    if expected:
        assert "Saver" not in released


@settings(max_examples=examples(200), deadline=None)
@given(
    data=st.data(),
    prefix=st.sampled_from(PREFIXES),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=30),
)
def test_no_prefix_of_an_invented_name_from_its_first_name_word_reaches_a_client(
    data: st.DataObject, prefix: str, cuts: list[int]
) -> None:
    brand_id, name, held = data.draw(
        st.sampled_from(
            [("meridian", "Fixed Saver Plus", "Saver Plus"), ("meridian", "Everyday Saver", "Saver"),
             ("demo", "Ethiopian Sidamo", "Ethiopian Sidamo"), ("demo", "Morning Hearth Blend", "Hearth Blend")]
        )
    )  # fmt: skip
    text = f"{prefix}try the {name} today."
    released, steps = stream(holding_rules_by_match(BRANDS[brand_id]), chunks(text, cuts))
    assert violation(steps) == "unsupported_fact", text
    assert len(released) <= text.index(held), f"released {released!r} past the start of {held!r}"


def test_a_new_question_does_not_recompute_the_brands_bound_quantities() -> None:
    # Per reply only the question and context are read; the knowledge's bindings are the brand's, once.
    from persona.facts import _bindings

    grounding(DEMO, (), "How long does shipping take?")
    misses = _bindings.cache_info().misses
    first = grounding(DEMO, (), "Do you ship every week to Canada?")
    second = grounding(DEMO, ("Orders ship within 24 hours of roasting.",), "And how often do you roast, weekly?")
    assert _bindings.cache_info().misses == misses
    assert first.bound and len(second.bound) < len(first.bound), "what the context states is no longer bound"
