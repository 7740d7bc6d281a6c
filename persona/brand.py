"""A brand is data: a YAML file under ``BRANDS_DIR`` validated by :class:`Brand`.

Minimal for now (voice, knowledge, fallbacks); grown into the full persona file later. A bad
brand file fails start-up with the file and field named; it never half-loads.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Snippet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topic: str
    text: str
    keywords: list[str] = Field(default_factory=list)


class Fallbacks(BaseModel):
    model_config = ConfigDict(extra="forbid")
    off_topic: str | None = None
    off_brand: str | None = None
    error: str | None = None
    truncated: str | None = None


class Theme(BaseModel):
    model_config = ConfigDict(extra="forbid")
    primary_color: str = "#3b2f2f"
    accent_color: str = "#c8742c"


class Brand(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    name: str
    persona_name: str
    voice: list[str] = Field(default_factory=list)
    system: str = ""
    greeting: str = "Hi!"
    no_match: str = "I'm not sure about that one."
    knowledge: list[Snippet] = Field(default_factory=list)
    fallbacks: Fallbacks = Field(default_factory=Fallbacks)
    theme: Theme = Field(default_factory=Theme)
    version: str = "1"


class BrandFileError(ValueError):
    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


def load_brand(path: Path) -> Brand:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise BrandFileError(path, f"not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise BrandFileError(path, "the file must hold a mapping of fields")
    try:
        brand = Brand.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors())
        raise BrandFileError(path, problems) from None
    if brand.id != path.stem:
        raise BrandFileError(path, f"id {brand.id!r} does not match the file name {path.stem!r}")
    return brand


def load_brands(directory: Path) -> dict[str, Brand]:
    """Every ``*.yaml`` brand in ``directory``; raises :class:`BrandFileError` on the first bad one."""
    if not directory.is_dir():
        raise BrandFileError(directory, "BRANDS_DIR is not a directory")
    brands = {}
    for path in sorted(directory.glob("*.yaml")):
        brand = load_brand(path)
        brands[brand.id] = brand
    if not brands:
        raise BrandFileError(directory, "no brand files (*.yaml) found")
    return brands
