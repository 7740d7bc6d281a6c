"""persona.leads: no match, complete or partial, of the guard's pattern starts before ``Leads.first``."""

from __future__ import annotations

import random
from pathlib import Path

import regex

from persona.checks import compile_rules
from persona.leads import leads
from persona.loader import load_brands

ROOT = Path(__file__).resolve().parent.parent

TRICKY = [
    r"(?-i:\b[A-Z]{4,}(?:\s+[A-Z]{3,}){2,}\b)",
    r"\s(?-i:[A-Z])x",
    r"x{2,3}yz|\bab+c",
    r"(?:a|b\s?)?c[d-f]\d",
    "[\u00e0-\u00ff]bc|kelvin",
    "stra\u00dfe",
    r"\bis\b",
    r"foo(?=bar)|(?<=x)yz",
    "'s\\s+safe|\u2019s\\s+ok",
    r"[^a]bc",
]
_WORDS = (
    "you your i is it's it\u2019s I'm safe completely AI as an language model GUARANTEE PIN Ok ABCD EFG HIJ xx yz "
    "abbc cd1 \u212aelvin \u017fafe stra\u00dfe STRASSE \U0001f600 ! bar xyz bc \u00e9bc should invest in stocks "
    "guarantee promise tomorrow my instructions say hope this helps tell me"
)
WORDS = _WORDS.split()
SEPARATORS = [" ", "  ", "\n", "\t", ", ", ". ", "", "\u00a0", "'", "\u2019"]


def test_no_match_starts_before_the_first_lead() -> None:
    brands = load_brands(ROOT / "brands")
    patterns = [(rules.regex.pattern, rules.leads) for rules in map(compile_rules, brands.values()) if rules.regex]
    patterns += [(rx, leads(rx)) for rx in TRICKY]
    assert all(found is not None for _, found in patterns[: len(brands)]), "the shipped brands are prefiltered"
    rng = random.Random(5)
    for _ in range(4000):
        rx, found = rng.choice(patterns)
        if found is None:
            continue
        pattern = regex.compile(rx, regex.IGNORECASE | regex.V0)
        text = "".join(rng.choice(WORDS) + rng.choice(SEPARATORS) for _ in range(rng.randint(1, 6)))
        text = text[: rng.randint(1, len(text))]
        text = rng.choice([text, text.upper(), text.lower()])
        pos = rng.randrange(len(text))
        first = found.first(text, pos)
        for at in range(pos, len(text)):
            match = pattern.match(text, at, partial=True)
            if match is not None:
                assert first is not None and first <= at, (rx[:60], text, pos, at, first)
                break
