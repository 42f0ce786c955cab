"""Turning service results into text for people and JSON for scripts."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from policy.durations import format_duration


def to_jsonable(value: Any) -> Any:
    """Plain JSON values for dataclasses, enums, times and collections."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, frozenset | set):
        return sorted(to_jsonable(v) for v in value)
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


EMPTY = "-"  # what an empty value prints as, everywhere


def _cell(value: Any) -> str:
    """One value as a person reads it: times to the second with their zone, yes/no, lists
    joined by commas, tables as ``key=value`` words, never a Python repr."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    value = to_jsonable(value)
    if value is None or value == "" or value == [] or value == {}:
        return EMPTY
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return " ".join(f"{k}={_cell(v)}" for k, v in value.items())
    text = str(value)
    if _ISO_TIME.fullmatch(text):  # a time that came as text (JSON, the API)
        with contextlib.suppress(ValueError):
            return _cell(datetime.fromisoformat(text))
    return text.replace("\n", " ")


_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)")


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], out: TextIO) -> None:
    if not rows:
        out.write("(none)\n")
        return
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    out.write("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    out.write("\n")
    for row in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")


def record(obj: Mapping[str, Any], out: TextIO) -> None:
    width = max((len(k) for k in obj), default=0)
    for key, value in obj.items():
        out.write(f"{key.ljust(width)}  {_cell(value)}\n")


def emit(result: Any, out: TextIO, *, as_json: bool, columns: Sequence[str] | None = None) -> None:
    """A list prints as a table (or JSON array); one object as key/value lines (or JSON)."""
    data = to_jsonable(result)
    if as_json:
        out.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
        return
    if isinstance(data, list):
        table(data, columns or (list(data[0]) if data else []), out)
    elif isinstance(data, dict):
        record(data, out)
    elif data is not None:
        out.write(f"{data}\n")
