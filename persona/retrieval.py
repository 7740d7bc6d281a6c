"""Lexical retrieval: Okapi BM25 over short documents, in pure Python.

Used to pick the knowledge snippets and the few-shot examples relevant to a question. A brand
has tens of snippets, so the index is built per call (microseconds) rather than cached: a brand
file edited and reloaded can never be served from a stale index.

Why BM25 and not embeddings: it needs no model download, is deterministic (snapshot tests), and
on FAQ-sized documents whose words the customer uses ("refund", "decaf", "card") it finds the
right snippet; keywords in the brand file cover synonyms.
"""

from __future__ import annotations

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


def bm25(query: str, documents: Sequence[str], *, k1: float = K1, b: float = B) -> list[Hit]:
    """Documents that share a term with ``query``, best first (ties: earlier document first)."""
    q_terms = set(content_terms(query))
    if not q_terms or not documents:
        return []
    docs = [Counter(content_terms(d, MAX_DOC_CHARS)) for d in documents]
    n = len(docs)
    avg_len = sum(sum(d.values()) for d in docs) / n or 1.0
    df = Counter(term for d in docs for term in d if term in q_terms)
    hits = []
    for index, tf in enumerate(docs):
        length = sum(tf.values())
        score = 0.0
        for term in q_terms & tf.keys():
            idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
            f = tf[term]
            score += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * length / avg_len))
        if score > 0:
            hits.append(Hit(index, score))
    hits.sort(key=lambda h: (-h.score, h.index))
    return hits


def top(query: str, documents: Sequence[str], k: int, *, relative_floor: float = 0.0) -> list[Hit]:
    """At most ``k`` hits, dropping those scoring under ``relative_floor`` x the best score."""
    hits = bm25(query, documents)
    if not hits:
        return []
    floor = hits[0].score * relative_floor
    return [h for h in hits[:k] if h.score >= floor]
