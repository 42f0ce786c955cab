"""Paging for list endpoints and pages: ``limit`` and an opaque ``cursor``.

A page is answered as ``{"items": [...], "next": CURSOR}``; ``next`` is null on the last
page, else the ``cursor`` that fetches the page after this one (the same URL is in a
``Link`` header, RFC 8288 ``rel="next"``). Lists come in a stable order (newest first for
sessions and recordings, by key otherwise), and a cursor names the last item of its page
(its time and id, or its key), so pages stay stable while new rows arrive. A cursor this
server did not give out, or whose row is gone, is 404: there is no such page.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from gateway.web import jsonbody
from gateway.web.problems import Problem
from gateway.web.schemas import DEFAULT_LIMIT, MAX_LIMIT

Position = tuple[datetime, str]


def no_such_page() -> Problem:
    return Problem(404, "not-found", "no such page: the cursor is not one this server gave out")


@dataclass(frozen=True)
class Page:
    items: Sequence[Any]
    next: Position | str | None  # a position (time, id), or an already opaque cursor

    @property
    def token(self) -> str | None:
        if self.next is None or isinstance(self.next, str):
            return self.next
        return encode(self.next)


def limit(request: web.Request) -> int:
    raw = request.query.get("limit", "")
    if not raw:
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise Problem(422, "invalid-input", f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def _unb64(raw: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(raw.encode() + b"=" * (-len(raw) % 4))
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise no_such_page() from None


def cursor(request: web.Request) -> Position | None:
    raw = request.query.get("cursor", "")
    if not raw:
        return None
    try:
        at, key = jsonbody.loads(_unb64(raw))
        return datetime.fromisoformat(at), str(key)
    except (ValueError, TypeError):
        raise no_such_page() from None


def encode(position: Position) -> str:
    raw = json.dumps([position[0].isoformat(), position[1]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def next_url(request: web.Request, page: Page) -> str | None:
    """The URL of the page after ``page``, with the request's other parameters."""
    token = page.token
    if token is None:
        return None
    query = dict(request.query)
    query["cursor"] = token
    return str(request.rel_url.with_query(query))


def respond(request: web.Request, items: list[Any], token: str | None) -> web.Response:
    """The page as JSON, with a ``Link`` to the next page when there is one."""
    response = web.json_response({"items": items, "next": token})
    if token is not None:
        query = dict(request.query)
        query["cursor"] = token
        response.headers["Link"] = f'<{request.rel_url.with_query(query)}>; rel="next"'
    return response


_KEYS = ("id", "seq", "session_id", "session", "name")


def _key(item: Any) -> str:
    for attr in _KEYS:
        value = item.get(attr) if isinstance(item, dict) else getattr(item, attr, None)
        if value is not None:
            return str(value)
    raise TypeError(f"{type(item).__name__} has no key to page by")


def page_of(
    request: web.Request, items: Sequence[Any], key: Callable[[Any], str] | None = None
) -> Page:
    """One page of a list the service returned in a stable order: the items after the
    cursor's key (``key``, else the item's id), and the cursor of the next page (None on
    the last)."""
    key = key or _key
    size = limit(request)
    start = 0
    raw = request.query.get("cursor", "")
    if raw:
        try:
            wanted = _unb64(raw).decode()
        except UnicodeDecodeError:
            raise no_such_page() from None
        keys = [key(i) for i in items]
        if wanted not in keys:
            raise no_such_page()
        start = keys.index(wanted) + 1
    chunk = list(items[start : start + size])
    if not chunk or start + size >= len(items):
        return Page(chunk, None)
    return Page(chunk, base64.urlsafe_b64encode(key(chunk[-1]).encode()).decode().rstrip("="))
