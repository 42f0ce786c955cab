"""Durations the schema has already checked (``schemas.DURATION``: the grammar, and more
than zero); what is left to refuse is the size, at most 365 days, which is a limit on a
well-formed value and so answers 403 like the rules' own maxima."""

from __future__ import annotations

from datetime import timedelta

from policy.durations import parse_duration
from policy.errors import InvalidInput, Refused


def duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except InvalidInput as exc:
        raise Refused(str(exc)) from None


def optional_duration(text: str | None) -> timedelta | None:
    """None for no duration (or ""): the default applies."""
    return duration(text) if text else None
