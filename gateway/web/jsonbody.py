"""Strict JSON for request bodies and cursors: what ``json.loads`` accepts but nothing
downstream can use is refused here, as bad input, before any handler sees it.

Two things pass the standard parser and then fail far from it: nesting deep enough to exhaust
the interpreter's recursion limit (``RecursionError``, a 500 anywhere it surfaces), and a lone
UTF-16 surrogate (``"\\ud800"``), a ``str`` that cannot be encoded to UTF-8 and so breaks the
database driver, the audit hash or the log line. Both are refused with ``BadJson``.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32


class BadJson(ValueError):
    """The text is not JSON this server accepts; the message is safe to show."""


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """``raw`` parsed as JSON with at most ``max_depth`` nested arrays/objects and no lone
    surrogate in any string or key. Raises BadJson."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    if _depth(text) > max_depth:
        raise BadJson(f"the JSON is nested deeper than {max_depth} levels")
    try:
        data = json.loads(text)
    except RecursionError:
        raise BadJson(f"the JSON is nested deeper than {max_depth} levels") from None
    _check_strings(data)
    return data


def _depth(text: str) -> int:
    """The deepest bracket nesting outside strings (a scan that cannot recurse)."""
    deepest = depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _check_strings(data: Any) -> None:
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            _encodable(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                _encodable(key)
                stack.append(item)
        elif isinstance(value, list):
            stack.extend(value)


def _encodable(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadJson("the JSON holds a lone UTF-16 surrogate") from None
