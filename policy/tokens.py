"""API bearer tokens: ``lgt_<id>_<secret>``; only SHA-256 of the secret is stored."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

TOKEN = re.compile(r"^lgt_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")


def new_token() -> tuple[str, str, str]:
    """Returns (token id, full token for the caller, hash to store)."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return token_id, f"lgt_{token_id}_{secret}", digest(secret)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split(token: str) -> tuple[str, str] | None:
    match = TOKEN.match(token)
    return (match.group(1), match.group(2)) if match else None


def matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(digest(secret), stored_hash)
