"""Paging for list endpoints and pages: ``limit`` and an opaque ``cursor``.

A page is answered as the JSON array of its items; when more follow, a ``Link`` header
(RFC 8288, ``rel="next"``) carries the URL of the next page. The cursor is the position of
the page's last item (its time and id), so pages stay stable while new rows arrive.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from gateway.web import jsonbody
from policy.errors import InvalidInput

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
QUERY = {
    "limit": f"at most this many (1-{MAX_LIMIT}, default {DEFAULT_LIMIT})",
    "cursor": "the next page: from the Link header of the previous one",
}


@dataclass(frozen=True)
class Page:
    items: Sequence[Any]
    next: tuple[datetime, str] | None


def limit(request: web.Request) -> int:
    raw = request.query.get("limit", "")
    if not raw:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def cursor(request: web.Request) -> tuple[datetime, str] | None:
    raw = request.query.get("cursor", "")
    if not raw:
        return None
    try:
        at, key = jsonbody.loads(base64.urlsafe_b64decode(raw.encode() + b"=" * (-len(raw) % 4)))
        return datetime.fromisoformat(at), str(key)
    except (ValueError, TypeError) as exc:
        raise InvalidInput("cursor is not one this server gave out") from exc


def encode(position: tuple[datetime, str]) -> str:
    raw = json.dumps([position[0].isoformat(), position[1]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def next_url(request: web.Request, page: Page) -> str | None:
    """The URL of the page after ``page``, with the request's other parameters."""
    if page.next is None:
        return None
    query = dict(request.query)
    query["cursor"] = encode(page.next)
    return str(request.rel_url.with_query(query))


def respond(
    request: web.Request, body: Any, next_cursor: str | None, status: int = 200
) -> web.Response:
    """The page's JSON array, with a ``Link`` to the next page when there is one."""
    response = web.json_response(body, status=status)
    if next_cursor is not None:
        query = dict(request.query)
        query["cursor"] = next_cursor
        response.headers["Link"] = f'<{request.rel_url.with_query(query)}>; rel="next"'
    return response


_KEYS = ("id", "seq", "session_id", "name")


def _key(item: Any) -> str:
    for attr in _KEYS:
        value = item.get(attr) if isinstance(item, dict) else getattr(item, attr, None)
        if value is not None:
            return str(value)
    raise TypeError(f"{type(item).__name__} has no key to page by")


def page_of(request: web.Request, items: Sequence[Any]) -> tuple[list[Any], str | None]:
    """One page of a list the service returned in a stable order: the items after the
    cursor's key, and the cursor of the next page (None on the last). A cursor whose item
    has gone is refused rather than silently restarting."""
    size = limit(request)
    start = 0
    raw = request.query.get("cursor", "")
    if raw:
        try:
            wanted = base64.urlsafe_b64decode(raw.encode() + b"=" * (-len(raw) % 4)).decode()
        except ValueError as exc:
            raise InvalidInput("cursor is not one this server gave out") from exc
        keys = [_key(i) for i in items]
        if wanted not in keys:
            raise InvalidInput("cursor is not one this server gave out, or its row is gone")
        start = keys.index(wanted) + 1
    chunk = list(items[start : start + size])
    if not chunk or start + size >= len(items):
        return chunk, None
    return chunk, base64.urlsafe_b64encode(_key(chunk[-1]).encode()).decode().rstrip("=")
