"""Lexical retrieval: Okapi BM25 over short documents, in pure Python.

Used to pick the knowledge snippets and the few-shot examples relevant to a question. The index
(term counts per document) is cached by the documents' own text, not by brand: a brand file edited
and reloaded gives new texts, so it can never be served from a stale index. Building it tokenises
every snippet, which cost more per reply than the rest of the prompt (issue 10); scoring a question
against it is a few dictionary lookups per query term.

Why BM25 and not embeddings: it needs no model download, is deterministic (snapshot tests), and
on FAQ-sized documents whose words the customer uses ("refund", "decaf", "card") it finds the
right snippet; keywords in the brand file cover synonyms.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from persona.text import content_terms

K1 = 1.2
B = 0.75
MAX_DOC_CHARS = 4_000  # a knowledge snippet is FAQ-sized; longer ones are ranked on their start


@dataclass(frozen=True)
class Hit:
    index: int
    score: float


@dataclass(frozen=True)
class _Index:
    docs: list[Counter[str]]  # term counts per document
    lengths: list[int]
    avg_len: float
    df: Counter[str]  # documents per term


@functools.lru_cache(maxsize=64)
def _index(documents: tuple[str, ...]) -> _Index:
    docs = [Counter(content_terms(d, MAX_DOC_CHARS)) for d in documents]
    lengths = [sum(d.values()) for d in docs]
    return _Index(docs, lengths, sum(lengths) / len(docs) or 1.0, Counter(term for d in docs for term in d))


def bm25(query: str, documents: Sequence[str], *, k1: float = K1, b: float = B) -> list[Hit]:
    """Documents that share a term with ``query``, best first (ties: earlier document first)."""
    q_terms = set(content_terms(query))
    if not q_terms or not documents:
        return []
    index = _index(tuple(documents))
    docs, avg_len, df = index.docs, index.avg_len, index.df
    n = len(docs)
    hits = []
    for i, tf in enumerate(docs):
        length = index.lengths[i]
        score = 0.0
        for term in q_terms & tf.keys():
            idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
            f = tf[term]
            score += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * length / avg_len))
        if score > 0:
            hits.append(Hit(i, score))
    hits.sort(key=lambda h: (-h.score, h.index))
    return hits


def top(query: str, documents: Sequence[str], k: int, *, relative_floor: float = 0.0) -> list[Hit]:
    """At most ``k`` hits, dropping those scoring under ``relative_floor`` x the best score."""
    hits = bm25(query, documents)
    if not hits:
        return []
    floor = hits[0].score * relative_floor
    return [h for h in hits[:k] if h.score >= floor]
