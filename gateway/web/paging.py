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
        at, key = json.loads(base64.urlsafe_b64decode(raw.encode() + b"=" * (-len(raw) % 4)))
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


def respond(request: web.Request, page: Page, body: Any, status: int = 200) -> web.Response:
    response = web.json_response(body, status=status)
    if (url := next_url(request, page)) is not None:
        response.headers["Link"] = f'<{url}>; rel="next"'
    return response
