"""Password hashing with argon2id. Unknown users cost the same as known ones."""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from policy.errors import InvalidInput

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


@functools.cache
def _dummy() -> str:
    """A real hash of a fixed value: verifying against it costs what a real check costs.
    Made at the first check, not at import (every ``lockgate`` command imports this)."""
    return _hasher.hash("lockgate-timing-equalizer")


def warm() -> None:
    """Make the dummy hash now: a server calls this before it listens, so that the first
    sign-in of an unknown user costs what every other one costs."""
    _dummy()


MIN_LENGTH = 12
MAX_LENGTH = 1024


def hash_password(password: str) -> str:
    if len(password) < MIN_LENGTH:
        raise InvalidInput(f"passwords must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise InvalidInput(f"passwords must have at most {MAX_LENGTH} characters")
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Constant work whether or not ``stored`` exists; never raises for a mismatch."""
    try:
        return _hasher.verify(stored or _dummy(), password[:MAX_LENGTH]) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
