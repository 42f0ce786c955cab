"""TOTP second factors (RFC 6238: SHA-1, 6 digits, 30 s steps, one step either side)."""

from __future__ import annotations

import base64
import hmac
import secrets
from datetime import datetime
from urllib.parse import quote

from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

STEP = 30
DIGITS = 6
SEED_BYTES = 20


def new_seed() -> bytes:
    return secrets.token_bytes(SEED_BYTES)


def _totp(seed: bytes) -> TOTP:
    return TOTP(seed, DIGITS, SHA1(), STEP, enforce_key_length=False)  # noqa: S303 - RFC 6238


def provisioning_uri(seed: bytes, user: str, issuer: str = "Lockgate") -> str:
    secret = base64.b32encode(seed).decode().rstrip("=")
    return (
        f"otpauth://totp/{quote(issuer)}:{quote(user)}?secret={secret}"
        f"&issuer={quote(issuer)}&algorithm=SHA1&digits={DIGITS}&period={STEP}"
    )


def code_at(seed: bytes, when: datetime) -> str:
    return _totp(seed).generate(int(when.timestamp())).decode()


def match(seed: bytes, code: str, now: datetime, last_counter: int) -> int | None:
    """The step counter ``code`` belongs to (within ±1 step), if newer than ``last_counter``.
    Every candidate is compared in constant time."""
    code = code.strip()
    if len(code) != DIGITS or not code.isdigit():
        return None
    totp = _totp(seed)
    counter = int(now.timestamp()) // STEP
    found = None
    for candidate in (counter - 1, counter, counter + 1):
        expected = totp.generate(candidate * STEP)
        if hmac.compare_digest(expected, code.encode()) and candidate > last_counter:
            found = candidate
    return found
