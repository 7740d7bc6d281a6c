"""Unguessable ids: 128 bits from the OS's CSPRNG, URL-safe, with a readable prefix."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(16)}"
