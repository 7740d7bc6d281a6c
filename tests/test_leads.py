"""persona.leads: no match, complete or partial, of the guard's pattern starts before ``Leads.first``; the
groups a lead could begin, searched alone, find what the whole pattern finds."""

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


def _seen(match: regex.Match[str] | None, end: int) -> tuple[object, ...] | None:
    """What the guard reads of a partial search's answer: nothing at the end, a partial match's start, a
    complete match's span, group and text."""
    if match is None or (match.partial and match.start() >= end):
        return None
    if match.partial:
        return ("partial", match.start())
    return ("complete", match.span(), match.lastgroup, match.group(0))


def test_masks_and_group_search_find_what_the_pattern_finds() -> None:
    """Leads.masks agrees with Leads.first, and searching only the groups a lead could begin (each alone,
    from its first lead: CompiledRules.group_search) finds what the combined pattern finds, complete or
    partial, on random texts for the shipped brands' rules."""
    brands = load_brands(ROOT / "brands")
    every = [compile_rules(brand) for brand in brands.values()]
    assert all(rules.groups and rules.leads is not None for rules in every)
    rng = random.Random(11)
    for _ in range(3000):
        rules = rng.choice(every)
        assert rules.leads is not None and rules.regex is not None
        text = "".join(rng.choice(WORDS) + rng.choice(SEPARATORS) for _ in range(rng.randint(1, 8)))
        text = text[: rng.randint(1, len(text))]
        text = rng.choice([text, text.upper(), text.lower(), text.capitalize()])
        pos = rng.randrange(len(text))
        found = rules.leads.masks(text, pos, len(text))
        first = rules.leads.first(text, pos)
        # (masks passes over a few positions first() reports: inside an ASCII word, where no lead that must
        # begin on a word boundary can begin, and none that need not begins with this character)
        assert not found or (first is not None and found[0][0] >= first), (text, pos, found[:1], first)
        starts: dict[int, int] = {}
        for at, mask in found:
            for i in range(len(rules.groups)):
                if mask < 0 or mask >> i & 1:
                    starts.setdefault(i, at)
        for partial in (True, False):
            whole = rules.regex.search(text, pos, partial=partial)
            some = rules.group_search(text, sorted(starts.items()), partial=partial) if found else None
            assert _seen(some, len(text)) == _seen(whole, len(text)), (text, pos, partial)
