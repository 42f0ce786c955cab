"""The web UI's listings: sessions (live and ended), recordings and the audit log, each
filtered by what its form asks and paged with an opaque cursor ("Older ..." links).

A filter the page cannot read (a date that is not one) is shown back with a note and
ignored, never a 500."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from gateway.sessions.records import SessionRecord
from gateway.web import paging
from gateway.web.deps import DEPS
from gateway.web.ui import forbidden_unless_auditor, render, signed_in

PAGE = 50
KINDS = ("", "ssh", "http")


def _day(text: str, what: str, notes: list[str]) -> datetime | None:
    """``YYYY-MM-DD`` as the start of that day in UTC."""
    text = text.strip()
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        notes.append(f"{what} must read YYYY-MM-DD; ignored")
        return None


def _query(request: web.Request, *names: str) -> dict[str, str]:
    return {name: request.query.get(name, "").strip()[:200] for name in names}


def _page_size(request: web.Request) -> int:
    try:
        return max(1, min(int(request.query.get("limit", PAGE)), 500))
    except ValueError:
        return PAGE


# --- sessions ------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionRow:
    """A session with its byte counts (fresh from this node's registry while it runs here)."""

    session: SessionRecord
    up: int
    down: int

    @property
    def live(self) -> bool:
        return self.session.active


async def sessions_page(request: web.Request) -> web.Response:
    """Live sessions first, then the ended ones (newest first, paged) with their replays."""
    who = signed_in(request)
    deps = request.app[DEPS]
    rows = []
    for s in await deps.sessions.list(who.name, active_only=True):
        handle = deps.registry.get(s.id)
        rows.append(
            SessionRow(
                s,
                getattr(handle, "bytes_up", s.bytes_up),
                getattr(handle, "bytes_down", s.bytes_down),
            )
        )
    size = _page_size(request)
    after = paging.cursor(request)
    ended = [
        s for s in await deps.sessions.list(who.name, limit=size + 1, after=after) if not s.active
    ]
    more = None
    if len(ended) > size:
        ended = ended[:size]
        more = paging.next_url(request, paging.Page(ended, (ended[-1].started_at, ended[-1].id)))
    return render(
        request,
        "sessions.html",
        live=rows,
        ended=[SessionRow(s, s.bytes_up, s.bytes_down) for s in ended],
        more=more,
    )


# --- recordings ----------------------------------------------------------------------


async def recordings_page(request: web.Request) -> web.Response:
    who = signed_in(request)
    forbidden_unless_auditor(request, who)
    deps = request.app[DEPS]
    form = _query(request, "q", "user", "target", "kind", "since", "until")
    notes: list[str] = []
    since = _day(form["since"], "from", notes)
    until = _day(form["until"], "to", notes)
    if form["kind"] not in KINDS:
        notes.append("kind must be ssh or http; ignored")
        form["kind"] = ""
    hits: list[Any] = []
    recordings: list[Any] = []
    commands: dict[str, list[str]] = {}
    more: str | None = None
    if form["q"]:
        hits = list(await deps.recordings.search(form["q"]))
    else:
        recordings, after = await deps.recordings.page(
            user=form["user"] or None,
            target=form["target"] or None,
            kind=form["kind"] or None,
            since=since,
            until=until + timedelta(days=1) if until else None,
            limit=_page_size(request),
            after=paging.cursor(request),
        )
        more = paging.next_url(request, paging.Page(recordings, after))
        commands = await deps.recordings.first_commands([r.session_id for r in recordings])
    return render(
        request,
        "recordings.html",
        form=form,
        kinds=KINDS,
        notes=notes,
        hits=hits,
        recordings=recordings,
        commands=commands,
        more=more,
    )


# --- audit ---------------------------------------------------------------------------


async def audit_page(request: web.Request) -> web.Response:
    who = signed_in(request)
    forbidden_unless_auditor(request, who)
    log = request.app[DEPS].services.audit
    form = _query(request, "actor", "action", "subject", "since", "until")
    notes: list[str] = []
    since = _day(form["since"], "from", notes)
    until = _day(form["until"], "to", notes)
    before = None
    if request.query.get("before", "").isdigit():
        before = int(request.query["before"])
    events, next_before = await log.page(
        actor=form["actor"] or None,
        action=form["action"] or None,
        subject=form["subject"] or None,
        since=since,
        until=until + timedelta(days=1) if until else None,
        before=before,
        limit=_page_size(request),
    )
    more = None
    if next_before is not None:
        more = str(request.rel_url.with_query({**request.query, "before": str(next_before)}))
    filtered = any(form.values()) or before is not None
    check = None if filtered else await log.verify()
    return render(
        request, "audit.html", check=check, events=events, form=form, notes=notes, more=more
    )


# --- nodes ---------------------------------------------------------------------------


async def nodes_page(request: web.Request) -> web.Response:
    """Auditors and admins: every node (worker) of the cluster, its live sessions and last
    heartbeat, and for a lost one who declared it so."""
    who = signed_in(request)
    forbidden_unless_auditor(request, who)
    return render(request, "nodes.html", nodes=await request.app[DEPS].services.nodes.listing())


def add_list_routes(app: web.Application) -> None:
    app.router.add_get("/nodes", nodes_page)
    app.router.add_get("/sessions", sessions_page)
    app.router.add_get("/recordings", recordings_page)
    app.router.add_get("/audit", audit_page)
