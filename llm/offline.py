"""The offline demo provider: the default when no ``OPENAI_API_KEY`` is set.

**It is not a language model**, and what it says is no measure of a real model's quality. It is
a demo of the whole path (prompt → provider → guard → stream log → clients) that runs with no
key and no network, in the brand's voice, built only from the brand file:

* a greeting ("hi", "good morning") → the brand's greeting and intro;
* "what's my name?" → recalled from the conversation (history or its rolling summary), phrased
  with the brand's ``offline.recall_name``;
* any other question → the knowledge snippets that BM25 ranks best for it (one, or two when the
  second scores at least half the first), after one of the brand's ``offline.openers``, cut to
  the brand's ``length.max_sentences``; nothing relevant → the greeting and ``no_match``.

It streams the result word by word at a human-ish pace (``OFFLINE_TOKEN_DELAY_MS`` ±40 %), through
the same guard as a real model. Deterministic for a given question, so tests compute the text it
will stream with :func:`compose_answer` (single questions) or :func:`compose_reply` (with history).
"""

from __future__ import annotations

import asyncio
import random
import re
import zlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from llm.base import Piece, ReplyRequest
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


def split_words(text: str) -> list[str]:
    """Word-sized pieces that join back to ``text`` exactly."""
    return re.findall(r"\S+\s*", text)


class OfflineProvider:
    name = "offline"

    def __init__(self, *, token_delay_ms: int = 35) -> None:
        self._delay_s = token_delay_ms / 1000

    async def open_reply(self, request: ReplyRequest) -> AsyncIterator[Piece]:
        return self._pieces(compose_reply(request.brand, request.messages), request.max_tokens)

    async def _pieces(self, text: str, max_tokens: int) -> AsyncIterator[Piece]:
        rng = random.Random(text)
        words = split_words(text)
        for count, word in enumerate(words, start=1):
            # Even at zero delay, yield to the event loop per word like a network read would.
            await asyncio.sleep(self._delay_s * rng.uniform(0.6, 1.4) if self._delay_s else 0)
            yield Piece(text=word)
            if count >= max_tokens:
                yield Piece(finish_reason="length")
                return
        yield Piece(finish_reason="stop", usage={"completion_tokens": len(words)})

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None
