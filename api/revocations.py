"""Revoked conversations: a brand's backend ends one conversation's tokens before they expire.

``POST /v1/conversations/{id}/revoke`` (the brand's API key) marks ``revoked:<brand>:<id>`` in the
limits' store (``api/limit_store.py``: Redis for ``redis://``, so every instance sees it; in process
for ``memory://``). From then on every token of that conversation is refused: at negotiate (a
refresh, 403), on every HTTP route that carries a token (401) and at a WebSocket's hello (4401); an
open WebSocket checks once per heartbeat and is closed with 4401. Stream events are never checked
one by one: a revocation costs one lookup per request, hello or heartbeat, not per event.

The mark lasts ``TOKEN_TTL_S`` + :data:`MARGIN_S`: a revoked conversation gets no new token, so
every token it has expires within ``TOKEN_TTL_S`` of the revocation, and after that the signature
check alone refuses them. The mark is scoped by brand: one brand's key cannot revoke another's
conversations.

**While the store is unreachable** (Redis down) the check *fails open*: a revoked token may still
connect and follow a reply that is already running, but it cannot start one (a send needs the same
store for its limits and is refused ``buffer_unavailable``), and the revocation holds again as
soon as Redis answers (within a heartbeat on open sockets). Revoking itself is refused (503,
retryable) so the caller knows to retry. The checks trip a breaker of their own
(``RedisLimitStore``): a check that failed during an outage never holds back the limits, and so a
send, once Redis is back. docs/security.md, "Conversation lifetime and revocation".
"""

from __future__ import annotations

import re

from loguru import logger

from api.auth import Grant
from api.exceptions import LimitsUnavailable, NotFound, Unauthorized
from api.limit_store import LimitStore

# A revocation outlives the last token it must refuse by this much (clock skew between instances).
MARGIN_S = 60.0
# What a conversation id may look like in a revoke request (ours are ``c_`` + 22 url-safe characters).
CONVERSATION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")

REVOKED_MESSAGE = "this conversation was revoked; start a new one"


class Revocations:
    def __init__(self, store: LimitStore, token_ttl_s: float) -> None:
        self.store = store
        self.ttl_s = token_ttl_s + MARGIN_S

    @staticmethod
    def _key(brand: str, conversation_id: str) -> str:
        return f"revoked:{brand}:{conversation_id}"

    async def revoke(self, brand: str, conversation_id: str) -> None:
        """Refuse every token of the conversation from now on. Raises :class:`NotFound` for an id
        that cannot be one of ours, :class:`LimitsUnavailable` when the store cannot be reached."""
        if not CONVERSATION_ID.fullmatch(conversation_id):
            raise NotFound("no such conversation")
        await self.store.mark(self._key(brand, conversation_id), self.ttl_s)

    async def is_revoked(self, brand: str, conversation_id: str) -> bool:
        """Whether the conversation was revoked; ``False`` while the store is unreachable (fails open)."""
        try:
            return await self.store.marked(self._key(brand, conversation_id))
        except LimitsUnavailable as exc:
            logger.warning("revocation not checked: {!r}", exc)
            return False

    async def check(self, grant: Grant) -> None:
        """Raises :class:`Unauthorized` when the grant's conversation was revoked."""
        if await self.is_revoked(grant.brand, grant.conversation_id):
            raise Unauthorized(REVOKED_MESSAGE)
