"""Issue 12 follow-up: the guard's general capabilities beyond the families it had, each with the
replies it must stop and the good ones (negations, refusals, short and other-language answers) it must
let through. Replies are streamed word by word through the real guard (tests/guard_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from persona.loader import load_brands
from tests.guard_helpers import run

BRANDS = load_brands(Path(__file__).resolve().parent.parent / "brands")
DEMO, BANK = BRANDS["demo"], BRANDS["meridian"]


def fired(brand_id: str, text: str, question: str = "") -> str | None:
    released, step = run(BRANDS[brand_id], text, question)
    if step is None:
        assert released == text, "a reply that passes goes out whole"
        return None
    assert step.violation is not None
    return step.violation


# --- off-topic: the roaster replaces replies that are not about its domain ------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "The capital of Australia is Canberra.",
        "Paris is the capital of France, on the Seine.",
        "The home side won two goals to one with a late penalty.",
        "Preheat the oven, layer the pasta with ragù and béchamel, and bake it until golden.",
    ],
)
def test_the_roaster_replaces_an_off_topic_reply_even_a_short_one(text: str) -> None:
    assert fired("demo", text, "Quick question") == "off_topic"


@pytest.mark.parametrize(
    ("text", "question"),
    [
        ("Coarse, and steep for four minutes.", "French press grind?"),
        ("8 till 2 on Saturdays and Sundays!", "Weekend hours?"),
        ("Bye for now, coffee friend!", "Thanks, bye"),
        ("I can't give medical advice, so please ask your doctor about caffeine.", "Is coffee OK for my heart?"),
        ("Never share your card details in the chat: payments only happen at our secure checkout.", "Card?"),
        ("That one's outside my little roastery, I'm afraid, but I can help with beans and brewing.", "Taxes?"),
        ("Tostamos los lunes y jueves y enviamos en 24 horas.", "¿Cuándo tostáis el café?"),
    ],
)
def test_good_short_refusing_and_other_language_replies_are_on_topic_for_the_roaster(text: str, question: str) -> None:
    assert fired("demo", text, question) is None
