"""Conversations that keep no state: the OpenAI-compatible endpoint's.

A Chat Completions request carries its whole history and gets a fresh conversation id that no one
can ever address again, so the turns and the ``client_message_id`` map the job manager would store
for it (kept ``CONVERSATION_TTL_S``, 24 h by default) could only cost memory. Conversation ids
made by :func:`new_ephemeral_id` are recognised by :class:`EphemeralConversations`, the buffer the
job manager writes through: their conversation writes are skipped and their history is empty.
Their *streams* are kept as any other (the reply is followed from the log, then expires after
``RESUME_WINDOW_S``). Every other conversation passes straight through.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from streaming.buffer import BufferWrapper
from streaming.contract import ReplyStatus, StreamOrigin, Turn
from streaming.events import StoredEvent
from streaming.ids import new_id

# Negotiated conversations are "c_…" (api/routes.py) and reach us only inside signed tokens, so no
# client can pick an id with this prefix.
EPHEMERAL_PREFIX = "x"


def new_ephemeral_id() -> str:
    return new_id(EPHEMERAL_PREFIX)


def is_ephemeral(conversation_id: str) -> bool:
    return conversation_id.startswith(EPHEMERAL_PREFIX + "_")


class EphemeralConversations(BufferWrapper):
    """A :class:`StreamBuffer` that stores nothing for ephemeral conversations."""

    # --- conversations: skipped when ephemeral -----------------------------------------------
    async def create_stream(
        self, stream_id: str, conversation_id: str, ttl_s: int, client_message_id: str | None = None
    ) -> str:
        if is_ephemeral(conversation_id):
            client_message_id = None  # one message per conversation: it always wins
        return await self._inner.create_stream(stream_id, conversation_id, ttl_s, client_message_id)

    async def claim_message(self, conversation_id: str, client_message_id: str, stream_id: str) -> str:
        if is_ephemeral(conversation_id):
            return stream_id  # one message per conversation: it always wins
        return await self._inner.claim_message(conversation_id, client_message_id, stream_id)

    async def add_turn(self, conversation_id: str, *turns: Turn) -> None:
        if not is_ephemeral(conversation_id):
            await self._inner.add_turn(conversation_id, *turns)

    async def finish_reply(
        self, conversation_id: str, stream_id: str, text: str, status: ReplyStatus, *, tokens: int | None = None
    ) -> None:
        if not is_ephemeral(conversation_id):
            await self._inner.finish_reply(conversation_id, stream_id, text, status, tokens=tokens)

    async def history(self, conversation_id: str) -> list[Turn]:
        if is_ephemeral(conversation_id):
            return []
        return await self._inner.history(conversation_id)

    # --- producer leases: an ephemeral conversation's turns are not written back ---------------
    async def start_production(self, stream_id: str, origin: StreamOrigin, first: Sequence[StoredEvent]) -> None:
        if is_ephemeral(origin.conversation_id):
            origin = dataclasses.replace(origin, turns=())
        await self._inner.start_production(stream_id, origin, first)
