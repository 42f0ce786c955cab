"""Durations as people type them: ``90s``, ``15m``, ``1h``, ``2h30m``, ``1d``."""

from __future__ import annotations

import re
from datetime import timedelta

from policy.errors import InvalidInput

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_FULL = re.compile(r"(?:\d+[dhms])+")
_PART = re.compile(r"(\d+)([dhms])")
MAX = timedelta(days=365)


def parse_duration(text: str) -> timedelta:
    """Parse a positive duration of at most 365 days; units must not repeat or go backwards."""
    value = text.strip().lower()
    if value.startswith("-") and _FULL.fullmatch(value[1:]):
        raise InvalidInput(f"invalid duration {text!r}: must be more than zero, e.g. 30m")
    if not _FULL.fullmatch(value):
        raise InvalidInput(f"invalid duration {text!r}: use e.g. 90s, 15m, 1h, 2h30m, 1d")
    seconds, last = 0, -1
    order = list(_UNITS)
    for number, unit in _PART.findall(value):
        rank = order.index(unit)
        if rank <= last:
            raise InvalidInput(f"invalid duration {text!r}: units must go from d to s, once each")
        last = rank
        if len(number) > 9:
            raise InvalidInput(f"invalid duration {text!r}: too long")
        seconds += int(number) * _UNITS[unit]
    result = timedelta(seconds=seconds)
    if result <= timedelta(0):
        raise InvalidInput(f"invalid duration {text!r}: must be more than zero")
    if result > MAX:
        raise InvalidInput(f"invalid duration {text!r}: at most 365d")
    return result


def format_duration(value: timedelta) -> str:
    """The shortest form ``parse_duration`` reads back; negative values read as ``0s``."""
    seconds = max(0, int(value.total_seconds()))
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in _UNITS.items():
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
