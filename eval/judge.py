"""Optional LLM judge: a real model scores replies against the brand's voice traits.

Only with a real ``OPENAI_API_KEY`` (``python -m eval --judge``): each reply is scored 1-5 per
voice trait by ``JUDGE_MODEL`` (default ``gpt-4o-mini``), ``repeats`` times, because one judgement
of a sampled model is noisy; the table shows the mean and the spread (population standard
deviation) per trait. The rubric is built from the brand file, so a new brand needs no new code.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import openai

from eval.runner import Reply
from persona.brand import Brand

RUBRIC = """You grade a customer-service chat reply for {name}.
The brand's voice traits: {traits}.
Tone-of-voice guide: {guide}

Score how well the REPLY matches EACH trait from 1 (not at all) to 5 (perfectly).
Answer with one JSON object and nothing else, mapping each trait exactly as written to an integer,
e.g. {example}."""


@dataclass(frozen=True)
class TraitScore:
    trait: str
    mean: float
    spread: float
    n: int


def parse_scores(text: str, traits: Sequence[str]) -> dict[str, int]:
    """The judge's JSON answer → {trait: 1..5}; unknown or out-of-range values are dropped."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return {}
    try:
        raw: Any = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return {}
    if not isinstance(raw, dict):
        return {}
    out = {}
    for trait in traits:
        value = raw.get(trait)
        if isinstance(value, int | float) and 1 <= value <= 5:
            out[trait] = round(value)
    return out


async def judge(
    client: openai.AsyncOpenAI, brand: Brand, replies: Sequence[Reply], *, model: str, repeats: int = 3
) -> list[TraitScore]:
    traits = brand.voice.traits
    system = RUBRIC.format(
        name=brand.name,
        traits=", ".join(traits),
        guide=" ".join(brand.voice.guide.split()),
        example=json.dumps(dict.fromkeys(traits, 4)),
    )
    scores: dict[str, list[int]] = {t: [] for t in traits}
    for reply in replies:
        for _ in range(repeats):
            response = await client.chat.completions.create(
                model=model,
                temperature=1.0,
                messages=[
                    {"role": "system", "content": system},
                    {"role": "user", "content": f"CUSTOMER: {reply.user}\nREPLY: {reply.text}"},
                ],
            )
            for trait, value in parse_scores(response.choices[0].message.content or "", traits).items():
                scores[trait].append(value)
    return [
        TraitScore(t, statistics.fmean(v) if v else 0.0, statistics.pstdev(v) if len(v) > 1 else 0.0, len(v))
        for t, v in scores.items()
    ]


def render_scores(brand: Brand, scores: Sequence[TraitScore]) -> str:
    lines = [f"  LLM judge ({brand.id}): trait scores 1-5, mean ± spread over replies x repeats"]
    for s in scores:
        lines.append(f"  {s.trait:<24} {s.mean:4.2f} ± {s.spread:4.2f}  (n={s.n})")
    return "\n".join(lines)
