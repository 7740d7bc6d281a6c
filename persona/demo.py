"""The offline demo's answers, in the brand's voice, built only from the brand file.

**Not a language model**, and what it says is no measure of a real model's quality:

* a greeting ("hi", "good morning") → the brand's greeting and intro;
* "what's my name?" → recalled from the conversation (history or its rolling summary), phrased
  with the brand's ``offline.recall_name``;
* any other question → the knowledge snippets that BM25 ranks best for it (one, or two when the
  second scores at least half the first), after one of the brand's ``offline.openers``, cut to
  the brand's ``length.max_sentences``; nothing relevant → the greeting and ``no_match``.

Deterministic for a given question, so tests compute the text the offline provider
(:mod:`llm.offline`) will stream with :func:`compose_answer` (single questions) or
:func:`compose_reply` (with history). The composition root hands :func:`compose_reply` to the
provider, so providers never import the brand layer.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import Any

from persona.brand import Brand
from persona.memory import asks_for_name, user_name
from persona.retrieval import top
from persona.text import split_sentences, words

_GREETING_WORDS = frozenset(
    [
        "hi",
        "hello",
        "hey",
        "hiya",
        "howdy",
        "yo",
        "good",
        "morning",
        "afternoon",
        "evening",
        "day",
        "there",
        "greetings",
    ]
)


def is_greeting(text: str) -> bool:
    ws = words(text)
    return 0 < len(ws) <= 4 and all(w in _GREETING_WORDS for w in ws)


def _join(*parts: str) -> str:
    return " ".join(" ".join(p.split()) for p in parts if p and p.strip())


def compose_answer(brand: Brand, question: str) -> str:
    """The reply the offline provider streams for ``question`` (no conversation history)."""
    if is_greeting(question):
        return _join(brand.greeting, brand.offline.intro)
    docs = [f"{s.topic} {' '.join(s.keywords)} {' '.join(s.keywords)} {s.text}" for s in brand.knowledge]
    hits = top(question, docs, 2, relative_floor=0.5)
    if not hits:
        return _join(brand.greeting, brand.no_match)
    openers = brand.offline.openers or [brand.greeting]
    opener = openers[zlib.crc32(question.strip().lower().encode()) % len(openers)]
    body = _join(*(brand.knowledge[h.index].text for h in hits))
    sentences = [s.strip() for s in split_sentences(body) if s.strip()]
    room = max(1, brand.length.max_sentences - 1)
    answer = _join(opener, *sentences[:room])
    if brand.sign_off.use == "always" and brand.sign_off.text:
        answer = _join(answer, brand.sign_off.text)
    return answer


def compose_reply(brand: Brand, messages: Sequence[dict[str, Any]]) -> str:
    """The reply for a whole prompt: :func:`compose_answer`, except that a question about the
    user's name is answered from the conversation (its turns and its rolling summary)."""
    question = ""
    for message in reversed(messages):
        if message.get("role") == "user" and not message.get("name"):
            question = str(message.get("content") or "")
            break
    if asks_for_name(question):
        said = [
            str(m.get("content") or "")
            for m in messages[:-1]
            if not m.get("name") and (m.get("role") == "user" or "earlier conversation" in str(m.get("content")))
        ]
        name = user_name(said)
        return brand.offline.recall_name.format(name=name) if name else brand.offline.recall_unknown
    introduction = re.sub(r"(?i)\b(my name is|my name's|call me|i'm|i am)\b.*", "", question)
    if user_name([question]) and is_greeting(introduction):
        return _join(brand.greeting, brand.offline.intro)  # "Hi, my name is Priya."
    return compose_answer(brand, question)
