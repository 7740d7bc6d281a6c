"""Conversation tokens: an HMAC-SHA256 signature over (conversation, brand, expiry).

A token grants access to its own conversation only. Stateless, so any instance that shares
``SESSION_SECRET`` verifies it without a lookup. Conversation ids are 128 random bits.
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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(secret: bytes, conversation_id: str, brand: str, ttl_s: int, *, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + ttl_s)
    body = _b64(json.dumps({"c": conversation_id, "b": brand, "e": expires}, separators=(",", ":")).encode())
    sig = _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
    return f"{body}.{sig}"


def verify_token(secret: bytes, token: str, *, now: float | None = None) -> Grant:
    """The grant a token carries. Raises :class:`Unauthorized` if forged, malformed or expired."""
    try:
        body, sig = token.split(".", 1)
        expected = _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(sig, expected):
            raise Unauthorized("the token's signature is not valid")
        payload = json.loads(_unb64(body))
        grant = Grant(str(payload["c"]), str(payload["b"]), int(payload["e"]))
    except Unauthorized:
        raise
    except (ValueError, KeyError, TypeError):
        raise Unauthorized("the token is malformed") from None
    if grant.expires_at < (now if now is not None else time.time()):
        raise Unauthorized("the token has expired; negotiate again")
    return grant


def require_conversation(grant: Grant, conversation_id: str) -> None:
    if not hmac.compare_digest(grant.conversation_id, conversation_id):
        raise Forbidden("this token belongs to another conversation")
