"""Scenario files: ``eval/scenarios/<brand>.yaml``, one list of multi-turn conversations per brand."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"


class Expect(BaseModel):
    """What one reply must satisfy, besides the brand's rules (checked on every reply)."""

    model_config = ConfigDict(extra="forbid")
    contains: list[str] = Field(default_factory=list, description="Every one of these (case-insensitive).")
    contains_any: list[str] = Field(default_factory=list, description="At least one of these.")
    not_contains: list[str] = Field(default_factory=list)
    recall: str | None = Field(default=None, description="A fact from earlier turns the reply must repeat (memory).")
    deflects: bool = Field(default=False, description="Steers back to the brand's topics (off-topic, injection).")
    fallback: bool | None = Field(
        default=None, description="True: the guard must replace the reply; False: it must not."
    )


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str
    expect: Expect = Field(default_factory=Expect)


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: str = Field(description="greeting, faq, off_topic, injection, memory, drift …")
    turns: list[Turn] = Field(min_length=1)


class ScenarioFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    brand: str
    scenarios: list[Scenario]


def load_scenarios(directory: Path = SCENARIO_DIR) -> dict[str, ScenarioFile]:
    """Every ``*.yaml`` scenario file, by brand id. Raises ``ValueError`` naming a bad file."""
    out = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            parsed = ScenarioFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        except (yaml.YAMLError, ValidationError) as exc:
            raise ValueError(f"{path}: {exc}") from None
        out[parsed.brand] = parsed
    return out
