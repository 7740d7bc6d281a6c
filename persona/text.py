"""Small, pure text helpers shared by retrieval, prompt assembly, the guard and the offline demo.

Nothing here downloads or loads a model: words are ``[a-z0-9']+`` runs, "stems" come from a
tiny suffix stripper (good enough to match *ship* / *shipping* / *ships*), sentences end at
``.``, ``!``, ``?`` or ``…`` followed by whitespace or the end of the text.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?:\s+|$)")

# Function words and chat glue: left out of retrieval and relevance scores.
_STOP_WORDS = """
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further get got had has
have having he her here hers herself him himself his how i if in into is it its itself just let like
me more most my myself no nor not now of off on once only or other our ours ourselves out over own
please same she should so some such than that the their theirs them themselves then there these they
this those through to too under until up very was we were what when where which while who whom why
will with would you your yours yourself yourselves i'm i've i'd i'll you're you've it's that's
there's what's let's don't doesn't didn't can't won't isn't aren't wasn't weren't hi hello hey thanks
thank ok okay yes yeah sure one two three four five six seven eight nine ten
tell know want need may might must shall us take make get go give find say come see look much many way
really still even ever
"""
STOP = frozenset(_STOP_WORDS.split())


def words(text: str) -> list[str]:
    """Lower-case word tokens, in order."""
    return WORD.findall(text.lower())


@functools.lru_cache(maxsize=65_536)
def stem(word: str) -> str:
    """A deliberately small suffix stripper: plural, -ing, -ed, -ly, possessive."""
    if word.endswith("'s"):
        word = word[:-2]
    for suffix, keep in (("ies", "y"), ("ing", ""), ("ed", ""), ("ly", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "s" and word.endswith("ss"):
                continue
            word = word[: -len(suffix)] + keep
            break
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
        word = word[:-1]  # shipp(ing) -> ship
    return word


def content_terms(text: str, limit: int | None = None) -> list[str]:
    """Stems of the words that carry meaning (no stop words, no bare numbers, no single letters);
    with ``limit``, only those of the first ``limit`` characters."""
    if limit is not None:
        text = text[:limit]
    return [stem(w) for w in words(text) if w not in STOP and len(w) > 1 and not w.isdigit()]


def term_set(texts: Iterable[str], limit: int | None = None) -> set[str]:
    out: set[str] = set()
    for text in texts:
        out.update(content_terms(text, limit))
    return out


def sentence_ends(text: str) -> list[int]:
    """Offsets just after each sentence end (including the whitespace that follows it)."""
    return [m.end() for m in _SENTENCE_END.finditer(text)]


def last_sentence_end(text: str) -> int:
    """Offset just after the last whole sentence of ``text`` (0 when there is none)."""
    ends = sentence_ends(text)
    return ends[-1] if ends else 0


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` with their trailing whitespace; the joined list equals ``text``."""
    out, start = [], 0
    for end in sentence_ends(text):
        out.append(text[start:end])
        start = end
    if start < len(text):
        out.append(text[start:])
    return out


def count_sentences(text: str) -> int:
    return sum(1 for s in split_sentences(text) if s.strip())
