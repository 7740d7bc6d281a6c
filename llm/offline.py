"""The offline demo provider: the default when no ``OPENAI_API_KEY`` is set.

It is not a language model. It answers from the brand's knowledge snippets: it scores each
snippet by word overlap with the question (plus the snippet's keywords), takes the best one or
two, wraps them in the brand's greeting, and streams the result word by word at a human-ish pace
(``OFFLINE_TOKEN_DELAY_MS`` with ±40 % jitter). Deterministic for a given question, so tests can
compute the exact text it will stream with :func:`compose_answer`.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator

from llm.base import Piece, ReplyRequest
from persona.brand import Brand

_WORD = re.compile(r"[a-z0-9']+")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "be",
        "can",
        "do",
        "does",
        "for",
        "from",
        "have",
        "how",
        "i",
        "in",
        "is",
        "it",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "please",
        "the",
        "to",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


def compose_answer(brand: Brand, question: str) -> str:
    """The reply the offline provider streams for ``question``."""
    asked = _words(question)
    scored = []
    for index, snippet in enumerate(brand.knowledge):
        keywords = _words(" ".join(snippet.keywords)) | _words(snippet.topic)
        score = 2 * len(asked & keywords) + len(asked & _words(snippet.text))
        if score:
            scored.append((-score, index, snippet.text))
    scored.sort()
    if not scored:
        return f"{brand.greeting} {brand.no_match}"
    top = -scored[0][0]
    best = [text for neg, _, text in scored[:2] if -neg * 2 >= top]
    return " ".join([brand.greeting, *best])


def split_words(text: str) -> list[str]:
    """Word-sized pieces that join back to ``text`` exactly."""
    return re.findall(r"\S+\s*", text)


class OfflineProvider:
    name = "offline"

    def __init__(self, *, token_delay_ms: int = 35) -> None:
        self._delay_s = token_delay_ms / 1000

    async def open_reply(self, request: ReplyRequest) -> AsyncIterator[Piece]:
        question = next((m["content"] for m in reversed(request.messages) if m.get("role") == "user"), "")
        return self._pieces(compose_answer(request.brand, str(question)), request.max_tokens)

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
