"""The two sentence reviewers (``reply/review.py`` runs them beside the stream).

* :class:`ModelReviewer` — a second opinion from a model: each batch of whole sentences goes, with
  a compact prompt from the brand's rules (``persona/review_prompt.py``), to an OpenAI-compatible
  chat completion through the same lean client as the reply (``llm/openai_provider.py``); a
  ``{"ok": false, "rule": …}`` verdict retracts the reply (rule ``review``).
* :class:`SemanticReviewer` — sentence embeddings (``persona/semantic.py``, the optional extra):
  a paraphrased leak of the instructions retracts at once (``semantic_leak``); at the end, a reply
  whose sentences are on average far from the brand's domain is off-topic (``semantic_off_topic``).
  The model runs in one worker thread of its own, never on the event loop.

:class:`Reviewers` is the :class:`~reply.review.ReviewerFactory` the composition root builds.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from loguru import logger

from llm.base import ChatProvider, ReplyRequest
from persona import semantic
from persona.brand import Brand
from persona.review_prompt import (
    MAX_VERDICT_CHARS,
    REVIEW_MAX_TOKENS,
    parse_verdict,
    review_messages,
    review_system_prompt,
)
from persona.text import split_sentences
from reply.review import Finding, ReviewUnreadable, SentenceReviewer

REVIEW_RULE = "review"
LEAK_RULE = "semantic_leak"
OFF_TOPIC_RULE = "semantic_off_topic"


@dataclass(frozen=True)
class ModelReview:
    """The second opinion's configuration (``GUARD_REVIEW_*``)."""

    provider: ChatProvider
    model: str
    timeout_s: float


class ModelReviewer:
    name = "model"
    judges_reply = False

    def __init__(self, config: ModelReview, brand: Brand, system_prompt: str) -> None:
        self.timeout_s = config.timeout_s
        self._config = config
        self._brand = brand
        self._system = system_prompt
        self._earlier: list[str] = []

    async def sentences(self, text: str) -> Finding | None:
        earlier = "".join(self._earlier)
        self._earlier.append(text)
        request = ReplyRequest(
            brand_id=self._brand.id,
            messages=review_messages(self._system, text.strip(), earlier),
            max_tokens=REVIEW_MAX_TOKENS,
            model=self._config.model,
            temperature=0.0,
        )
        pieces = await self._config.provider.open_reply(request)
        answer: list[str] = []
        size = 0
        try:
            async for piece in pieces:
                answer.append(piece.text)
                size += len(piece.text)
                if size > MAX_VERDICT_CHARS:
                    break
        finally:
            aclose = getattr(pieces, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        said = "".join(answer)
        verdict = parse_verdict(said)
        if verdict is None:
            raise ReviewUnreadable(f"not a verdict: {said[:120]!r}")
        return None if verdict.ok else Finding(REVIEW_RULE, verdict.rule)

    async def end(self) -> Finding | None:
        return None


# The embedding model: one worker thread for the process (one inference at a time; two threads on
# a busy CPU measured slower per sentence). Its queue holds at most MAX_CALLS_IN_FLIGHT calls per
# reply being reviewed (reply/review.py).
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _model_thread() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="semantic")
        return _executor


def _score(brand: Brand, sentences: list[str]) -> list[semantic.SentenceScore]:
    return semantic.brand_space(brand).score(sentences)


class SemanticReviewer:
    name = "semantic"
    judges_reply = True

    def __init__(self, brand: Brand, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._brand = brand
        self._scores: list[semantic.SentenceScore] = []

    async def sentences(self, text: str) -> Finding | None:
        parts = [s.strip() for s in split_sentences(text) if s.strip()]
        loop = asyncio.get_running_loop()
        scores = await loop.run_in_executor(_model_thread(), _score, self._brand, parts)
        check = self._brand.guard.semantic
        for score in scores:
            self._scores.append(score)
            if semantic.is_leak(check, score):
                detail = f"{score.instruction:.2f} to {score.nearest_instruction!r} (domain {score.domain:.2f})"
                return Finding(LEAK_RULE, detail)
        return None

    async def end(self) -> Finding | None:
        check = self._brand.guard.semantic
        score = semantic.off_topic(check, self._scores)
        if score is None:
            return None
        detail = f"domain score {score:.3f} < {check.topic_threshold}"
        if check.off_topic_action == "log":
            logger.bind(brand=self._brand.id).info("semantic off-topic reply (log only): {}", detail)
            return None
        return Finding(OFF_TOPIC_RULE, detail)


class Reviewers:
    """Which reviewers a reply of a brand gets: the model's second opinion when one is configured
    and the brand did not opt out; sentence embeddings when the brand turned them on."""

    def __init__(self, *, model: ModelReview | None, semantic_timeout_s: float) -> None:
        self._model = model
        self._semantic_timeout_s = semantic_timeout_s
        self._prompts: dict[tuple[str, str], str] = {}

    def enabled_for(self, brand: Brand) -> bool:
        return (self._model is not None and brand.guard.review.enabled) or brand.guard.semantic.enabled

    def __call__(self, brand: Brand, stream_id: str, /) -> Sequence[SentenceReviewer]:
        out: list[SentenceReviewer] = []
        if self._model is not None and brand.guard.review.enabled:
            key = (brand.id, brand.version)
            prompt = self._prompts.get(key)
            if prompt is None:
                prompt = self._prompts[key] = review_system_prompt(brand)
            out.append(ModelReviewer(self._model, brand, prompt))
        if brand.guard.semantic.enabled:
            out.append(SemanticReviewer(brand, self._semantic_timeout_s))
        return out

    async def close(self) -> None:
        if self._model is not None:
            await self._model.provider.close()


def warm_semantic(brands: Sequence[Brand]) -> None:
    """Load the model and every semantic brand's embeddings (blocking: call it in a thread at start-up)."""
    for brand in brands:
        if brand.guard.semantic.enabled:
            semantic.brand_space(brand)
