"""Password hashing with argon2id. Unknown users cost the same as known ones."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from policy.errors import InvalidInput

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# A real hash of a random value: verifying against it costs what a real check costs.
_DUMMY = _hasher.hash("lockgate-timing-equalizer")
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
        return _hasher.verify(stored or _DUMMY, password[:MAX_LENGTH]) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
