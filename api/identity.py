"""Identity verification: a signed-in user of the brand's site, proven by an HMAC its backend computed.

The brand's backend knows who is signed in. It computes

    user_hash = hex(HMAC-SHA256(key=<the brand's identity secret>, msg=<user_id as UTF-8>))

and renders ``user_id`` and ``user_hash`` into the page; the widget passes them to negotiate as
``"user": {"id", "hash", "name"?, "email"?}`` (docs/client.md, "Signed-in users"). Only the holder
of the secret can compute a hash, so a page cannot claim to be another user: without the secret a
``user_id`` is just text, and an unsigned or wrongly signed identity is **never trusted** — negotiate
refuses it with ``401 identity_invalid`` rather than carrying on anonymously, so a brand sees the
mistake at once (a console error, the widget's ``error`` event) instead of chats that silently lost
their user.

Secrets are per brand (``IDENTITY_SECRETS``), so one brand's hash never verifies for another. A
brand may list two secrets while it rotates: both verify until the old one is removed. A brand
with no secret verifies nobody (``identity_invalid``: "not configured"). The hash covers the user
id only (as Intercom's and Crisp's do): ``name`` and ``email`` ride along with a verified id as the
page states them.

What a verified identity becomes (``api/routes.py``): the user id and name are claims of the
conversation's token (``api/auth.py``), so every route and the WebSocket see them without a
lookup; and the conversation is *bound* to the user id in the limits' store
(``owner:<brand>:<conversation_id>``), so a token of user A's conversation never continues it as
user B — not even a token issued before the conversation was bound. The email is checked and then
dropped: the server has no use for it yet and a token can travel in a URL (SSE's ``?token=``).
The model is shown none of it (docs/security.md, "Signed-in users").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from api.exceptions import Forbidden, IdentityInvalid
from api.limit_store import LimitStore

MAX_USER_ID_CHARS = 256
MAX_USER_NAME_CHARS = 100
MAX_EMAIL_CHARS = 254
# A SHA-256 digest in hex: the only form a user hash takes.
USER_HASH = re.compile(r"[0-9a-fA-F]{64}")
# A BCP 47 language tag, loosely: "en", "pt-BR", "zh-Hant-TW". Stored as a hint, never parsed further.
LOCALE = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}$"
MAX_LOCALE_CHARS = 35


class UserClaim(BaseModel):
    """Negotiate's optional ``user``: who the page says is signed in, with the brand backend's hash."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=MAX_USER_ID_CHARS, description="the brand's id of the signed-in user")
    hash: str | None = Field(
        default=None,
        max_length=128,
        description="hex HMAC-SHA256 of `id` (UTF-8) keyed with the brand's identity secret; required",
    )
    name: str | None = Field(default=None, max_length=MAX_USER_NAME_CHARS, description="display name (not signed)")
    email: str | None = Field(default=None, max_length=MAX_EMAIL_CHARS, description="checked, not kept (not signed)")


@dataclass(frozen=True)
class VerifiedUser:
    id: str
    name: str | None = None

    def as_dict(self) -> dict[str, str]:
        """The verified user as negotiate and the history route show it."""
        return {"id": self.id, **({"name": self.name} if self.name else {})}


def user_hash(secret: str | bytes, user_id: str) -> str:
    """What the brand's backend computes: hex HMAC-SHA256 of the user id (UTF-8) under the secret."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()


def verify_user(secrets: tuple[bytes, ...], brand: str, claim: UserClaim) -> VerifiedUser:
    """The verified user of ``claim``, whose hash one of the brand's ``secrets`` produced. Raises
    :class:`IdentityInvalid` when the hash is missing, malformed or wrong, or the brand has no secret.
    Constant time in the hash compared (``hmac.compare_digest`` over every secret)."""
    if not secrets:
        raise IdentityInvalid(
            f"identity verification is not configured for brand {brand!r} (IDENTITY_SECRETS); "
            "an unsigned identity is never trusted"
        )
    if not claim.hash:
        raise IdentityInvalid("user.hash is required: the HMAC-SHA256 of user.id your backend computes")
    if not USER_HASH.fullmatch(claim.hash):
        raise IdentityInvalid("user.hash must be 64 hex characters (HMAC-SHA256 of user.id)")
    given = claim.hash.lower().encode()
    matched = False
    for secret in secrets:  # no early exit: each secret costs the same whether or not one matched
        matched |= hmac.compare_digest(given, user_hash(secret, claim.id).encode())
    if not matched:
        raise IdentityInvalid("user.hash does not match user.id for this brand")
    if claim.email is not None and "@" not in claim.email:
        raise IdentityInvalid("user.email is not an email address")
    name = claim.name.strip() if claim.name else None
    return VerifiedUser(claim.id, name or None)


def parse_identity_secrets(raw: str) -> dict[str, tuple[bytes, ...]]:
    """``IDENTITY_SECRETS``: ``brand=secret,brand=secret`` (a brand named twice has both: rotation),
    or JSON ``{"brand": "secret"}`` / ``{"brand": ["new", "old"]}``. Raises ``ValueError`` (naming the
    brand, never the secret) when malformed."""
    text = raw.strip()
    pairs: list[tuple[str, str]] = []
    if not text:
        return {}
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            raise ValueError("IDENTITY_SECRETS is not valid JSON") from None
        if not isinstance(data, dict):
            raise ValueError("IDENTITY_SECRETS must be a JSON object of brand → secret(s)")
        for brand, value in data.items():
            values = value if isinstance(value, list) else [value]
            if not values or not all(isinstance(v, str) for v in values):
                raise ValueError(f"IDENTITY_SECRETS: the secret of brand {brand!r} must be a string or a list of them")
            pairs += [(str(brand), v) for v in values]
    else:
        for item in text.split(","):
            if not item.strip():
                continue
            brand, sep, secret = item.partition("=")
            if not sep:
                raise ValueError("IDENTITY_SECRETS entries are brand=secret, comma-separated")
            pairs.append((brand.strip(), secret.strip()))
    keys: dict[str, tuple[bytes, ...]] = {}
    for brand, secret in pairs:
        if not brand or not secret:
            raise ValueError(f"IDENTITY_SECRETS: an entry for brand {brand!r} has an empty brand or secret")
        keys[brand] = (*keys.get(brand, ()), secret.encode())
    return keys


def owner_key(brand: str, conversation_id: str) -> str:
    """The limits' store key that binds a conversation to its verified user."""
    return f"owner:{brand}:{conversation_id}"


async def bind_conversation(store: LimitStore, brand: str, conversation_id: str, user_id: str, lease_s: float) -> None:
    """Bind the conversation to ``user_id`` (or confirm it is theirs) until ``lease_s`` from now, on
    every instance sharing the store. Raises :class:`Forbidden` when another user holds it and
    ``LimitsUnavailable`` (503, retryable) when the store cannot be reached: a binding is never skipped."""
    holder = await store.claim(owner_key(brand, conversation_id), user_id, lease_s)
    if holder is not None:
        raise Forbidden("this conversation belongs to another user; start a new one")
