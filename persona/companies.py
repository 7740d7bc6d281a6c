"""Who counts as a competitor: the brand's own list plus a shipped gazetteer per industry.

A brand that lists five competitors misses the sixth; ``data/companies.yaml`` holds a few hundred
well-known companies (coffee, banking, fintech, retail), each with its aliases, written by hand and
shipped in the package (nothing is fetched). A brand declares ``guard.competition.industries`` and
gets every name of those industries, besides ``guard.competitors``. Names stay literals: the guard
walks them in its case-sensitive trie (:class:`persona.checks.PhraseScanner`), so each costs nothing
per token beyond the characters that start one, and no prefix of a name is ever released.

Never a competitor: the brand itself (an entry that shares its name, or a distinctive word of it,
with the brand's ``name`` or ``persona_name`` is dropped whole, aliases and all: a gazetteer
"Meridian Credit Union" would otherwise catch the bank's own "Meridian …"), and the names in
``guard.competition.allowed`` (partners, platforms the brand supports; naming any form of a
gazetteer entry allows all its forms).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Final

import yaml

from persona.brand import Brand

GAZETTEER_PATH: Final = Path(__file__).resolve().parent / "data" / "companies.yaml"

# Words of a brand's name that say nothing about who it is ("Meridian Bank" is "Meridian").
_GENERIC = frozenset(
    (
        *("the", "and", "of", "&", "co", "company", "group", "plc", "inc", "ltd", "llc", "store", "stores"),
        *("coffee", "roasters", "roastery", "cafe", "café", "market", "assistant"),
        *("bank", "banking", "building", "society", "credit", "union", "financial", "services"),
    )
)


@cache
def gazetteer() -> dict[str, dict[str, tuple[str, ...]]]:
    """Industry → company name → its aliases, read once per process."""
    raw = yaml.safe_load(GAZETTEER_PATH.read_text(encoding="utf-8"))
    return {
        industry: {str(name): tuple(str(a) for a in (aliases or ())) for name, aliases in entries.items()}
        for industry, entries in raw.items()
    }


def _distinctive(text: str) -> set[str]:
    return {w for w in text.replace("&", " ").casefold().split() if w not in _GENERIC}


def competitor_names(brand: Brand) -> list[str]:
    """Every name the brand's guard treats as a competitor (as written), its own list first."""
    own = _distinctive(brand.name) | _distinctive(brand.persona_name)
    allowed = {a.strip() for a in brand.guard.competition.allowed}
    names = [
        n.strip()
        for n in brand.guard.competitors
        if n.strip() and n.strip() not in allowed and not _distinctive(n) & own
    ]
    seen = set(names)
    for industry in brand.guard.competition.industries:
        for name, aliases in gazetteer().get(industry, {}).items():
            forms = (name, *aliases)
            if any(_distinctive(form) & own for form in forms):
                continue  # the brand itself (or a namesake): never a competitor
            if allowed.intersection(forms):
                continue  # a partner: its aliases are allowed too
            for form in forms:
                if form not in seen:
                    seen.add(form)
                    names.append(form)
    return names
