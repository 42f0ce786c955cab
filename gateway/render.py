"""Turning service results into text for people and JSON for scripts."""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
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


def _cell(value: Any) -> str:
    value = to_jsonable(value)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "-"
    text = str(value)
    if len(text) == 32 and text[10] == "T":  # trim isoformat to the second
        return text[:19].replace("T", " ")
    return text.replace("\n", " ")


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
