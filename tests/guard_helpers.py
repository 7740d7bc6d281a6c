"""Streaming a text through the real guard word by word, for the guard's rule tests."""

from __future__ import annotations

import re

from persona.brand import Brand
from persona.guard import BrandGuard, GuardContext, GuardStep


def run(brand: Brand, text: str, question: str = "") -> tuple[str, GuardStep | None]:
    """Word by word through the guard; what was released and the step that fired, if any."""
    guard = BrandGuard(brand, GuardContext(question=question))
    released = ""
    for piece in re.findall(r"\S+\s*", text):
        step = guard.feed(piece)
        released += step.release
        if step.violation:
            return released, step
    step = guard.finish("stop")
    return released + step.release, step if step.violation else None
