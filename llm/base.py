"""The provider contract: open a streaming reply, iterate its pieces.

``open_reply`` returns once the upstream accepted the request (response headers arrived), so the
caller can time the connect phase apart from the first token and the gaps between tokens. Both the
call and the iteration raise only :class:`llm.exceptions.UpstreamError` subclasses; cancelling
either closes the upstream HTTP response.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Piece:
    """A bit of reply text, or (``finish_reason`` set) the upstream's end of the reply."""

    text: str = ""
    finish_reason: str | None = None


@dataclass(frozen=True)
class ReplyRequest:
    """One reply to generate. Providers know brands only by id: the prompt already carries the
    persona (providers never import the brand layer)."""

    brand_id: str
    messages: list[dict[str, Any]]
    max_tokens: int
    model: str | None = None  # the brand's model; None: the provider's default
    temperature: float | None = None  # None: the provider's default


class ChatProvider(Protocol):
    name: str

    async def open_reply(self, request: ReplyRequest) -> AsyncIterator[Piece]:
        """Start a reply; returns an async iterator of pieces (close it with ``aclose``)."""
        ...

    async def check(self) -> None:
        """Raise if the provider is unusable (for ``/readyz``)."""

    async def close(self) -> None:
        """Release connections."""
