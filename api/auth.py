"""Conversation tokens: an HMAC-SHA256 signature over (conversation, brand, expiry, start).

A token grants access to its own conversation only. Stateless, so any instance that shares
``SESSION_SECRET`` verifies it without a lookup. Conversation ids are 128 random bits.

``n`` is when the conversation was first negotiated: a refresh copies it into the new token, so a
conversation cannot be kept alive by refreshing past ``CONVERSATION_MAX_AGE_S`` (no token is issued
or accepted after that; a token never expires later than that). Tokens signed before the field
existed have no ``n``: they verify until their own expiry (at most ``TOKEN_TTL_S``), and a refresh
counts their conversation as started when that token was issued (docs/security.md). Revoking one
conversation is a lookup, not part of the token: ``api/revocations.py``.

Optional claims, absent from anonymous tokens and from tokens of before they existed: ``u`` / ``un``
the verified user's id and name (``api/identity.py``: only negotiate puts them there, after checking
the brand backend's HMAC; a refresh copies them), ``l`` the locale the page asked for (a hint the
guard's language check may read as ``Grant.locale``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from api.exceptions import Forbidden, Unauthorized


@dataclass(frozen=True)
class Grant:
    conversation_id: str
    brand: str
    expires_at: int
    started_at: int | None = None  # when the conversation was first negotiated; None: an older token
    user_id: str | None = None  # the verified user (api/identity.py); None: anonymous
    user_name: str | None = None
    locale: str | None = None  # the page's locale hint (negotiate's `locale`)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(
    secret: bytes,
    conversation_id: str,
    brand: str,
    ttl_s: int,
    *,
    now: float | None = None,
    started_at: int | None = None,
    max_age_s: int | None = None,
    user_id: str | None = None,
    user_name: str | None = None,
    locale: str | None = None,
) -> str:
    """A token for ``ttl_s`` seconds; with ``started_at`` and ``max_age_s``, never past the
    conversation's end of life (``started_at + max_age_s``). ``user_id`` only for a verified user."""
    expires = int((now if now is not None else time.time()) + ttl_s)
    payload: dict[str, str | int] = {"c": conversation_id, "b": brand, "e": expires}
    if started_at is not None:
        payload["n"] = started_at
        if max_age_s is not None:
            payload["e"] = min(expires, started_at + max_age_s)
    if user_id is not None:
        payload["u"] = user_id
        if user_name:
            payload["un"] = user_name
    if locale:
        payload["l"] = locale
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    sig = _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
    return f"{body}.{sig}"


def verify_token(secret: bytes, token: str, *, now: float | None = None, max_age_s: int | None = None) -> Grant:
    """The grant a token carries. Raises :class:`Unauthorized` if forged, malformed, expired, or (with
    ``max_age_s``) its conversation was first negotiated ``max_age_s`` or more seconds ago."""
    try:
        body, sig = token.split(".", 1)
        expected = _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(sig, expected):
            raise Unauthorized("the token's signature is not valid")
        payload = json.loads(_unb64(body))
        started = payload.get("n")
        grant = Grant(
            str(payload["c"]),
            str(payload["b"]),
            int(payload["e"]),
            None if started is None else int(started),
            user_id=_optional(payload, "u"),
            user_name=_optional(payload, "un"),
            locale=_optional(payload, "l"),
        )
    except Unauthorized:
        raise
    except (ValueError, KeyError, TypeError, AttributeError):
        raise Unauthorized("the token is malformed") from None
    now = now if now is not None else time.time()
    if grant.expires_at < now:
        raise Unauthorized("the token has expired; negotiate again")
    if max_age_s is not None and grant.started_at is not None and now >= grant.started_at + max_age_s:
        raise Unauthorized("this conversation is too old to continue; start a new one")
    return grant


def _optional(payload: dict[str, object], key: str) -> str | None:
    value = payload.get(key)
    return None if value is None else str(value)


def require_conversation(grant: Grant, conversation_id: str) -> None:
    if not hmac.compare_digest(grant.conversation_id, conversation_id):
        raise Forbidden("this token belongs to another conversation")
