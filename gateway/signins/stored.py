"""How sign-in secrets are kept in the database: never the value, only its SHA-256, looked up
by equality (a digest reveals nothing to compare against); times read back as UTC."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes for what was written as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
