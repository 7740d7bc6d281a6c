"""The offline demo provider: the default when no ``OPENAI_API_KEY`` is set.

**It is not a language model**, and what it says is no measure of a real model's quality. It is
a demo of the whole path (prompt → provider → guard → stream log → clients) that runs with no
key and no network. What it says comes from a ``compose`` function it is given (the composition
root passes :func:`persona.demo.compose_reply`, the brand's voice from the brand file).

It streams the result word by word at a human-ish pace (``OFFLINE_TOKEN_DELAY_MS`` ±40 %), through
the same guard as a real model. Deterministic for a given
composed text.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from llm.base import Piece, ReplyRequest

# (brand id, prompt messages) → the whole reply text.
Compose = Callable[[str, Sequence[dict[str, Any]]], str]


def split_words(text: str) -> list[str]:
    """Word-sized pieces that join back to ``text`` exactly."""
    return re.findall(r"\S+\s*", text)


class OfflineProvider:
    name = "offline"

    def __init__(self, *, compose: Compose, token_delay_ms: int) -> None:
        self._compose = compose
        self._delay_s = token_delay_ms / 1000

    async def open_reply(self, request: ReplyRequest) -> AsyncIterator[Piece]:
        return self._pieces(self._compose(request.brand_id, request.messages), request.max_tokens)

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
        yield Piece(finish_reason="stop")

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None
