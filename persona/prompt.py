"""Prompt assembly (minimal): system from the brand, recent history, the user's message."""

from __future__ import annotations

from typing import Any

from persona.brand import Brand

MAX_HISTORY_TURNS = 12


def system_prompt(brand: Brand) -> str:
    voice = ", ".join(brand.voice)
    facts = "\n".join(f"- {s.text}" for s in brand.knowledge)
    parts = [
        f"You are {brand.persona_name}, the assistant of {brand.name}.",
        f"Voice: {voice}." if voice else "",
        brand.system,
        f"Facts you may state:\n{facts}" if facts else "",
    ]
    return "\n\n".join(p for p in parts if p)


def build_messages(brand: Brand, history: list[dict[str, Any]], user_text: str) -> list[dict[str, Any]]:
    """Messages for one reply: system, the last finished turns, then the new user message."""
    turns: list[dict[str, Any]] = []
    for turn in history:
        if turn.get("role") == "user":
            turns.append({"role": "user", "content": turn["text"]})
        elif turn.get("role") == "assistant" and turn.get("status") == "done" and turn.get("text"):
            turns.append({"role": "assistant", "content": turn["text"]})
    turns = turns[-MAX_HISTORY_TURNS:]
    while turns and turns[0]["role"] != "user":
        turns.pop(0)
    return [{"role": "system", "content": system_prompt(brand)}, *turns, {"role": "user", "content": user_text}]
