"""Conversation memory helpers (pure): stored turns → exchanges, the rolling summary, user facts.

Short-term memory is the conversation's turn list in the buffer backend (Redis with
``CONVERSATION_TTL_S``, or memory), written by the generation job and read back for every new
message, so it survives reconnects and instance changes; ``GET /v1/conversations/{id}`` shows it.
Only *moderated* text is stored: an assistant turn holds the final text of its stream (the
fallback after a ``retract``), never what the guard withheld.

Prompt assembly cuts history in whole exchanges (a user turn and the assistant's reply to it).
Exchanges that no longer fit the budget are folded into a short **extractive** summary: the
facts the user stated about themselves (their name) and what they asked about, newest first.
It is computed from the stored turns each time (nothing extra to store or expire) and costs no
model call, so it adds no latency before the first token. An LLM-written summary would read
better but would need a model round-trip per message or a background job and a place to keep it;
the :data:`Summariser` type is the seam for one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from persona.text import words


@dataclass(frozen=True)
class Exchange:
    """One user message and the assistant's finished reply to it (``None``: it failed or still runs)."""

    user: str
    assistant: str | None = None
    # Token counts stored with the turns (``None``: count the text; turns stored before counts were).
    user_tokens: int | None = field(default=None, compare=False)
    assistant_tokens: int | None = field(default=None, compare=False)


Summariser = Callable[[Sequence[Exchange]], str]

_NAME = re.compile(  # the phrase in any case, the name capitalised (so "Eleanor Price", not "Eleanor and")
    r"\b(?i:my name is|my name's|call me|i am called|customer's name is)\s+"
    r"([A-Z][a-zA-Z'\-]+(?:\s+[A-Z][a-zA-Z'\-]+)?)",
)
_NAME_CASELESS = re.compile(r"\b(?:my name is|my name's|call me)\s+([a-zA-Z][a-zA-Z'\-]+)", re.IGNORECASE)
_NAME_QUESTION = re.compile(
    r"\b(what(?:'s| is) my name|who am i\b|do you (?:remember|know) (?:my name|who i am)|remember my name)",
    re.IGNORECASE,
)
_NOT_NAMES = frozenset({"not", "just", "a", "an", "the", "looking", "here", "interested", "new", "asking", "back"})


def exchanges(history: Iterable[dict[str, Any]]) -> list[Exchange]:
    """Stored turns (docs/protocol.md §6 shape) → exchanges, oldest first.

    An assistant turn counts only when it finished (``status: done``) with text; a user turn
    without one still counts (its words may matter: "my name is …"), with ``assistant=None``."""
    out: list[Exchange] = []
    for turn in history:
        role = turn.get("role")
        if role == "user":
            out.append(Exchange(str(turn.get("text") or ""), user_tokens=_tokens(turn)))
        elif (
            role == "assistant"
            and out
            and out[-1].assistant is None
            and turn.get("status") == "done"
            and turn.get("text")
        ):
            out[-1] = Exchange(
                out[-1].user, str(turn["text"]), user_tokens=out[-1].user_tokens, assistant_tokens=_tokens(turn)
            )
    return out


def _tokens(turn: dict[str, Any]) -> int | None:
    tokens = turn.get("tokens")
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else None


def user_name(texts: Iterable[str]) -> str | None:
    """The name the user last gave ("my name is Priya", "call me Sam"), else ``None``."""
    found: str | None = None
    for text in texts:
        for regex in (_NAME, _NAME_CASELESS):
            for match in regex.finditer(text):
                name = match.group(1).strip()
                if name.lower() not in _NOT_NAMES:
                    found = name[:1].upper() + name[1:]
                    break
            else:
                continue
            break
    return found


def asks_for_name(text: str) -> bool:
    return bool(_NAME_QUESTION.search(text))


def _gist(text: str, limit: int = 12) -> str:
    ws = re.findall(r"\S+", text.strip())
    gist = " ".join(ws[:limit])
    return gist + (" …" if len(ws) > limit else "")


def extractive_summary(evicted: Sequence[Exchange], *, max_topics: int = 6) -> str:
    """A short summary of exchanges that no longer fit: user facts, then what they asked, newest first."""
    if not evicted:
        return ""
    parts = []
    name = user_name(e.user for e in evicted)
    if name:
        parts.append(f"The customer's name is {name}.")
    asked = [_gist(e.user) for e in reversed(evicted) if words(e.user)][:max_topics]
    if asked:
        parts.append("Earlier they asked: " + "; ".join(f"“{a}”" for a in asked) + ".")
    if len(evicted) > max_topics:
        parts.append(f"({len(evicted)} earlier exchanges in all.)")
    return " ".join(parts)
