"""What is left to check of values the schema has checked, beyond their grammar: a
duration's size (at most 365 days: a limit on a well-formed value, so 403 like the rules'
own maxima) and a UID range's order (409 when its low end is above its high end)."""

from __future__ import annotations

from datetime import timedelta

from policy.durations import parse_duration
from policy.errors import Conflict, InvalidInput, Refused


def duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except InvalidInput as exc:
        raise Refused(str(exc)) from None


def optional_duration(text: str | None) -> timedelta | None:
    """None for no duration (or ""): the default applies."""
    return duration(text) if text else None


def uid_range(text: str | None) -> str | None:
    """An ``A-B`` UID range whose digits the schema has checked: one whose low end is above
    its high end conflicts with itself (409)."""
    if text is not None:
        low, _, high = text.partition("-")
        if int(low) > int(high):
            raise Conflict(f"uid range {text} is empty: {low} is above {high}")
    return text
