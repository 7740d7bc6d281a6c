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
from contextlib import AbstractAsyncContextManager

from streaming.buffer import StreamBuffer
from streaming.contract import CancelHandler, LeaseLostHandler, Orphan, ReplyStatus, StreamInfo, StreamOrigin, Turn
from streaming.events import StoredEvent
from streaming.fanout import Subscription
from streaming.ids import new_id

# Negotiated conversations are "c_…" (api/routes.py) and reach us only inside signed tokens, so no
# client can pick an id with this prefix.
EPHEMERAL_PREFIX = "x"


def new_ephemeral_id() -> str:
    return new_id(EPHEMERAL_PREFIX)


def is_ephemeral(conversation_id: str) -> bool:
    return conversation_id.startswith(EPHEMERAL_PREFIX + "_")


class EphemeralConversations:
    """A :class:`StreamBuffer` that stores nothing for ephemeral conversations."""

    def __init__(self, inner: StreamBuffer) -> None:
        self._inner = inner
        self.url = inner.url

    # --- conversations: skipped when ephemeral -----------------------------------------------
    async def claim_message(self, conversation_id: str, client_message_id: str, stream_id: str) -> str:
        if is_ephemeral(conversation_id):
            return stream_id  # one message per conversation: it always wins
        return await self._inner.claim_message(conversation_id, client_message_id, stream_id)

    async def add_turn(self, conversation_id: str, turn: Turn) -> None:
        if not is_ephemeral(conversation_id):
            await self._inner.add_turn(conversation_id, turn)

    async def finish_reply(
        self, conversation_id: str, stream_id: str, text: str, status: ReplyStatus, *, tokens: int | None = None
    ) -> None:
        if not is_ephemeral(conversation_id):
            await self._inner.finish_reply(conversation_id, stream_id, text, status, tokens=tokens)

    async def history(self, conversation_id: str) -> list[Turn]:
        if is_ephemeral(conversation_id):
            return []
        return await self._inner.history(conversation_id)

    # --- everything else passes through ------------------------------------------------------
    async def start(self) -> None:
        await self._inner.start()

    async def close(self) -> None:
        await self._inner.close()

    async def ping(self) -> None:
        await self._inner.ping()

    async def request_cancel(self, stream_id: str) -> None:
        await self._inner.request_cancel(stream_id)

    def on_cancel(self, callback: CancelHandler) -> None:
        self._inner.on_cancel(callback)

    def subscribe(self, stream_id: str) -> AbstractAsyncContextManager[Subscription]:
        return self._inner.subscribe(stream_id)

    async def end_abandoned(self, stream_id: str, code: str, message: str) -> None:
        await self._inner.end_abandoned(stream_id, code, message)

    async def create_stream(self, stream_id: str, conversation_id: str, ttl_s: int) -> None:
        await self._inner.create_stream(stream_id, conversation_id, ttl_s)

    async def append(self, stream_id: str, events: Sequence[StoredEvent], *, expire_after_s: int | None = None) -> None:
        await self._inner.append(stream_id, events, expire_after_s=expire_after_s)

    async def read_after(self, stream_id: str, after_seq: int) -> list[StoredEvent]:
        return await self._inner.read_after(stream_id, after_seq)

    async def stream_info(self, stream_id: str) -> StreamInfo | None:
        return await self._inner.stream_info(stream_id)

    # --- producer leases: pass through; an ephemeral conversation's turns are not written back --
    async def start_production(self, stream_id: str, origin: StreamOrigin, first: Sequence[StoredEvent]) -> None:
        if is_ephemeral(origin.conversation_id):
            origin = dataclasses.replace(origin, turns=())
        await self._inner.start_production(stream_id, origin, first)

    async def orphans(self) -> list[str]:
        return await self._inner.orphans()

    async def take_over(self, stream_id: str) -> Orphan | None:
        return await self._inner.take_over(stream_id)

    def on_lease_lost(self, callback: LeaseLostHandler) -> None:
        self._inner.on_lease_lost(callback)
