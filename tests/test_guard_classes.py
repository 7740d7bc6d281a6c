"""Competitors and filler beyond the listed strings (issue 12, part 6): the shipped gazetteer of
well-known companies per industry (persona/data/companies.yaml) and generic filler as families of
patterns (persona/filler.py), through the same streaming machinery as the brand's own phrases, so
no prefix of a match is released and a clean reply is not held."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from persona.brand import Brand
from persona.checks import check_text, compile_rules
from persona.companies import competitor_names, gazetteer
from persona.filler import BUILTIN_FILLER, FAMILIES
from persona.loader import load_brands
from tests.guard_helpers import run

BRANDS = load_brands(Path(__file__).resolve().parent.parent / "brands")
DEMO, BANK = BRANDS["demo"], BRANDS["meridian"]


def guarded(brand: Brand, **settings: object) -> Brand:
    return brand.model_copy(update={"guard": brand.guard.model_copy(update=settings)})


# --- competitors not in the brand file ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("brand", "text", "name"),
    [
        (DEMO, "Costa Coffee does a decent flat white, but ours is fresher.", "Costa Coffee"),
        (DEMO, "If you like Dunkin' you'll love the Hearth blend.", "Dunkin'"),
        (DEMO, "It's a bit like a Tim Hortons double-double.", "Tim Hortons"),
        (DEMO, "Our pods work in any Nespresso machine.", "Nespresso"),
        (DEMO, "Lavazza and illy are darker than our Hearth blend.", "Lavazza"),
        (DEMO, "We are a lot like La Colombe, only smaller.", "La Colombe"),
        (DEMO, "You can also find our beans on Amazon.", "Amazon"),
        (DEMO, "Counter Culture Coffee roasts a similar Huila.", "Counter Culture Coffee"),
        (BANK, "Wells Fargo offers a similar account.", "Wells Fargo"),
        (BANK, "Unlike Bank of America, we pay interest monthly.", "Bank of America"),
        (BANK, "You may send money with Venmo or PayPal.", "Venmo"),
        (BANK, "Starling and N26 have similar apps.", "Starling"),
        (BANK, "The rate is higher than at Goldman Sachs.", "Goldman Sachs"),
        (BANK, "Klarna lets you split the payment.", "Klarna"),
        (BANK, "Our rates beat JPMorgan on savings.", "JPMorgan"),
    ],
)
def test_a_well_known_competitor_of_the_brands_industry_is_caught_though_the_brand_file_does_not_list_it(
    brand: Brand, text: str, name: str
) -> None:
    assert name not in brand.guard.competitors
    released, fired = run(brand, text)
    assert fired is not None and fired.violation == "competitor"
    assert len(released) <= text.index(name), f"released {released!r}: part of {name!r}"
    assert any(f.rule == "competitor" for f in check_text(brand, text)), "the eval's full-text check agrees"


@pytest.mark.parametrize(
    ("brand", "text"),
    [
        (BANK, "You can add your card to Apple Pay or Google Pay, and it works wherever Visa is accepted."),
        (BANK, "Your Meridian debit card is a Visa card; the credit card is a Mastercard."),
        (BANK, "We will chase the payment for you and confirm within two hours."),
        (BANK, "A stripe on the back of your card holds your signature."),
        (DEMO, "Our Costa Rica Tarrazú is bright and honeyed."),
        (DEMO, "Try the Hearth blend in a French press: four minutes, coarse grind."),
        (DEMO, "Our beans are roasted on Mondays and shipped the next morning."),
        (DEMO, "Square mile for square mile, the Huila region grows remarkable coffee."),
    ],
)
def test_payment_methods_card_networks_places_and_common_words_are_not_competitors(brand: Brand, text: str) -> None:
    released, fired = run(brand, text, question=text)
    assert fired is None or fired.violation != "competitor"
    assert fired is not None or released == text
    assert not any(f.rule == "competitor" for f in check_text(brand, text))


def test_the_brands_own_name_is_never_a_competitor_even_when_the_gazetteer_lists_it() -> None:
    peets = DEMO.model_copy(update={"name": "Peet's Coffee", "persona_name": "Alfred"})
    names = competitor_names(peets)
    assert "Peet's" not in names and "Peet's Coffee" not in names and "Starbucks" in names
    _, fired = run(peets, "Peet's Coffee roasts its beans in small batches.")
    assert fired is None
    monzo = BANK.model_copy(update={"name": "Monzo Bank", "persona_name": "Monzo Assistant"})
    monzo = guarded(monzo, competitors=[])
    assert "Monzo" not in competitor_names(monzo) and "Revolut" in competitor_names(monzo)


def test_a_partner_the_brand_allows_is_not_a_competitor_under_any_of_its_names() -> None:
    partner = guarded(BANK, competition=BANK.guard.competition.model_copy(update={"allowed": ["PayPal"]}))
    for text in ("You can link your account to PayPal.", "You can link your account to Paypal."):
        released, fired = run(partner, text)
        assert fired is None and released == text
    assert run(partner, "Venmo works too.")[1] is not None


def test_a_brand_without_industries_has_only_its_own_list() -> None:
    plain = guarded(
        DEMO,
        competition=DEMO.guard.competition.model_copy(update={"industries": []}),
        off_topic=DEMO.guard.off_topic.model_copy(update={"action": "log"}),  # "flat white": not the brand's words
    )
    assert competitor_names(plain) == DEMO.guard.competitors
    assert run(plain, "Costa Coffee does a decent flat white.")[1] is None


def test_the_gazetteer_holds_a_few_hundred_names_per_industry_with_aliases() -> None:
    shipped = gazetteer()
    assert set(shipped) == {"coffee", "banking", "fintech", "retail"}
    entries = sum(len(v) for v in shipped.values())
    forms = entries + sum(len(a) for v in shipped.values() for a in v.values())
    assert entries >= 300 and forms >= 400
    for names in shipped.values():
        for name, aliases in names.items():
            for form in (name, *aliases):
                assert form == form.strip() and form, f"{name!r}: bad form {form!r}"
                # Left out on purpose (docs): everyday words and places, as written
                assert form not in {"Target", "Wise", "Square", "Apple", "Costa", "Discover", "Current", "Visa"}


# --- filler, phrased new ways -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "family"),
    [
        ("Hope that was helpful!", "hope_it_helps"),
        ("I trust this answers your question.", "hope_it_helps"),
        ("I hope this information helps you choose.", "hope_it_helps"),
        ("Don't hesitate to reach out to us.", "invite_more"),
        ("Let me know if you have any other questions.", "invite_more"),
        ("If you have any further questions, just ask.", "invite_more"),
        ("Please feel free to ask me anything.", "invite_more"),
        ("What an excellent question!", "praise_question"),
        ("That's a really good question.", "praise_question"),
        ("I'd be more than happy to assist with that.", "happy_to_help"),
        ("I\u2019d be glad to help you today.", "happy_to_help"),
        ("How can I assist you today?", "happy_to_help"),
        ("I'm here to help with any questions you may have.", "happy_to_help"),
        ("I completely understand your concern, and your security is our top priority.", "reassurance"),
        ("We apologise for any inconvenience caused.", "reassurance"),
        ("Let me know if there's anything else I can help with!", "invite_more"),
        ("Absolutely! I'm glad you asked.", "praise_question"),
        ("It is worth mentioning that beans go stale.", "worth_noting"),
        ("It's crucial to remember that grind matters.", "worth_noting"),
        ("To sum up, the Huila is the one.", "in_conclusion"),
        ("In summary: grind finer.", "in_conclusion"),
        ("As a virtual assistant, I cannot taste coffee.", "ai_disclaimer"),
        ("I'm only a bot, but the Huila sounds great.", "ai_disclaimer"),
        ("Being an AI, I have no taste buds.", "ai_disclaimer"),
        ("I cannot form personal opinions about roasts.", "no_feelings"),
        ("I don't have any feelings about decaf.", "no_feelings"),
        ("In today's busy world, coffee matters.", "cliche"),
        ("Let's delve into the world of pour-over.", "cliche"),
    ],
)
def test_filler_is_caught_however_it_is_phrased_and_no_part_of_it_is_released(text: str, family: str) -> None:
    assert re.search(FAMILIES[family], text, re.IGNORECASE), f"the {family} family covers it"
    released, fired = run(DEMO, text)
    assert fired is not None and fired.violation == "filler"
    match = re.search(FAMILIES[family], text, re.IGNORECASE)
    assert match is not None and len(released) <= match.start()
    assert any(f.rule == "filler" for f in check_text(DEMO, text))


def test_the_old_builtin_phrases_are_all_still_filler() -> None:
    for phrase in BUILTIN_FILLER:
        assert any(f.rule == "filler" for f in check_text(DEMO, f"Well, {phrase} and so on.")), phrase


@pytest.mark.parametrize(
    ("brand", "text"),
    [
        (DEMO, "Happy to help! Our Huila is chocolatey and smooth."),
        (DEMO, "Let me know if you need a grind recommendation for your brewer."),
        (DEMO, "As a subscriber, you can skip any month from your account page."),
        (DEMO, "It is important that the water is just off the boil."),
        (DEMO, "In conclusions about roast level, taste beats labels."),
        (DEMO, "I hope you enjoy the Hearth blend."),
        (DEMO, "I'm happy to help you find a decaf you'll love in the meantime."),
        (DEMO, "How can I brew a stronger cup today? Use 18 grams instead of 15."),
        (BANK, "Please note that the Easy Saver rate is variable."),
        (BANK, "If you have any questions about a payment, call 0800 123 4567."),
        (BANK, "I am the Meridian Assistant. I can help with savings, cards and payments."),
    ],
)
def test_ordinary_sentences_that_share_words_with_filler_are_not_filler(brand: Brand, text: str) -> None:
    assert not any(f.rule == "filler" for f in check_text(brand, text))
    _, fired = run(brand, text, question=text)
    assert fired is None or fired.violation != "filler"


def test_a_brand_can_switch_a_family_off_and_add_its_own_patterns() -> None:
    filler = DEMO.guard.filler.model_copy(update={"off": ["praise_question"], "patterns": [r"\bhappy brewing\b"]})
    brand = guarded(DEMO, filler=filler)
    assert run(brand, "Great question! Our Huila is chocolatey.")[1] is None
    released, fired = run(brand, "Enjoy the Huila and happy brewing!")
    assert fired is not None and fired.violation == "filler" and released == "Enjoy the Huila and "
    assert run(brand, "I hope this helps.")[1] is not None, "the other families stay on"
    nothing = guarded(DEMO, builtin_filler=False)
    assert run(nothing, "I hope this helps with your brew.")[1] is None


def test_every_family_has_a_pattern_and_every_pattern_compiles_into_the_guard() -> None:
    rules = compile_rules(DEMO)
    assert rules.regex is not None
    assert list(rules.names.values()).count("filler") == len(FAMILIES)


def test_a_bad_brand_filler_pattern_is_refused_when_the_file_loads() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="not a valid regular expression"):
        DEMO.guard.filler.model_validate({"patterns": ["(unclosed"]})
