"""The web UI: server-rendered pages; actions go through the JSON API from ``app.js``.

All markup lives in Jinja2 templates under ``templates/`` (one layout, ``base.html``), rendered
with autoescaping on for every template: a value from a person, a target or a recording is
always text on the page, never markup. The scripts insert terminal content with
``textContent`` only, and no page carries inline script (the CSP forbids it). Pages need a
signed-in browser (else a redirect to ``/login``); what each page lists is what the API would
return to the same person.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jinja2
from aiohttp import web

from gateway.errors import UNAVAILABLE
from gateway.sessions.records import SessionRecord
from gateway.web import paging
from gateway.web.api_sessions import request_timeline
from gateway.web.auth import (
    COOKIE,
    PRINCIPAL,
    SESSION_TTL,
    Principal,
    client_address,
    same_origin,
    scheme,
)
from gateway.web.deps import DEPS, Deps
from policy.durations import format_duration
from policy.errors import NotFound
from policy.models import RequestState

TEMPLATES = Path(__file__).parent / "templates"
SPEEDS = ("0.5", "1", "2", "4", "8", "16")


# --- rendering -----------------------------------------------------------------------


def timestamp(value: datetime | None) -> str:
    """A moment as ISO 8601 to the second (what ``app.js`` counts down to)."""
    return "-" if value is None else value.isoformat(timespec="seconds")


def duration(value: timedelta | None) -> str:
    return "-" if value is None else format_duration(value)


def seconds(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}s"


def details(value: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in value.items())


def _finalize(value: Any) -> Any:
    """A missing value shows as ``-``, never as ``None``."""
    return "-" if value is None else value


def environment() -> jinja2.Environment:
    """The template environment: autoescaping for every template whatever its name, an
    unknown variable is an error rather than an empty string, filters registered here once."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters.update(timestamp=timestamp, duration=duration, seconds=seconds, details=details)
    return env


ENV = environment()


def render(
    request: web.Request, template: str, /, *, status: int = 200, **context: Any
) -> web.Response:
    """``template`` as an HTML response. The layout shows the navigation and the CSRF token
    of ``who``: the signed-in person unless the handler passes ``who`` (``None`` for none)."""
    context.setdefault("who", request.get(PRINCIPAL))
    text = ENV.get_template(template).render(context)
    return web.Response(text=text, status=status, content_type="text/html")


def signed_in(request: web.Request) -> Principal:
    who = request.get(PRINCIPAL)
    if not isinstance(who, Principal):
        raise web.HTTPSeeOther("/login?" + urlencode({"next": request.path_qs}))
    return who


def need_auditor(who: Principal) -> None:
    if not who.user.is_auditor:
        raise web.HTTPForbidden(text="This page is for auditors and admins.")


# --- sign-in -------------------------------------------------------------------------


def _safe_next(value: str) -> str:
    """Only a path on this site: never another host (``//evil``) or a scheme.

    Browsers drop tabs and newlines from a URL and read ``\\`` as ``/``, so the value is judged
    as they would parse it: any control character or backslash refuses it, and what is left
    must split into a path (and query) with neither scheme nor host."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith("/"):
        return "/"
    if parts.path.startswith("//"):
        return "/"
    return value


async def login_page(request: web.Request) -> web.Response:
    next_url = _safe_next(request.query.get("next", "/"))
    return render(request, "login.html", who=None, next_url=next_url, message="")


async def login(request: web.Request) -> web.Response:
    if not same_origin(request):
        raise web.HTTPForbidden(text="Sign-in must come from the Lockgate sign-in page.")
    form = await request.post()
    next_url = _safe_next(str(form.get("next", "/")))
    deps = request.app[DEPS]
    try:
        result = await deps.signin.attempt(
            str(form.get("user", "")),
            str(form.get("password", "")),
            str(form.get("code", "")),
            client_address(request),
        )
    except tuple(UNAVAILABLE):
        return render(
            request,
            "login.html",
            status=503,
            who=None,
            next_url=next_url,
            message="The gateway cannot reach its database right now; try again in a minute.",
        )
    if result is None:
        return render(
            request,
            "login.html",
            status=401,
            who=None,
            next_url=next_url,
            message="Sign-in failed.",
        )
    cookie, _ = result
    response = web.HTTPSeeOther(next_url)
    response.set_cookie(
        COOKIE,
        cookie,
        httponly=True,
        samesite="Strict",
        secure=scheme(request) == "https",
        max_age=int(SESSION_TTL.total_seconds()),
        path="/",
    )
    raise response


async def logout(request: web.Request) -> web.Response:
    signed_in(request)  # the middleware has checked Origin and the CSRF token
    request.app[DEPS].browser.end(request.cookies.get(COOKIE, ""))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


# --- my access and approvals -----------------------------------------------------------


async def my_access(request: web.Request) -> web.Response:
    who = signed_in(request)
    policy = request.app[DEPS].services.policy
    now = policy.now()
    requestable = [(r, a) for r in await policy.requestable(who.name) for a in r.accounts]
    requests = await policy.list_requests(who.name, mine_only=True)
    grants = [g for g in await policy.list_grants(who.name, mine_only=True) if g.is_active(now)]
    web_targets = {t.name for t in await policy.list_targets() if t.kind == "http"}
    return render(
        request,
        "my_access.html",
        requestable=requestable,
        requests=requests[:50],
        grants=grants,
        web_targets=web_targets,
        chosen=request.query.get("target", ""),
        pending=RequestState.PENDING,
    )


async def approvals(request: web.Request) -> web.Response:
    who = signed_in(request)
    policy = request.app[DEPS].services.policy
    pending = [
        r for r in await policy.list_requests(who.name, pending_only=True) if r.user != who.name
    ]
    return render(request, "approvals.html", pending=pending)


# --- sessions ------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveRow:
    """A live session with its byte counts, fresh from this node's registry when it runs here."""

    session: SessionRecord
    up: int
    down: int


async def sessions_page(request: web.Request) -> web.Response:
    who = signed_in(request)
    deps = request.app[DEPS]
    rows = []
    for s in await deps.sessions.list(who.name, active_only=True):
        handle = deps.registry.get(s.id)
        up = getattr(handle, "bytes_up", s.bytes_up)
        down = getattr(handle, "bytes_down", s.bytes_down)
        rows.append(LiveRow(s, up, down))
    return render(request, "sessions.html", live=rows)


async def live_page(request: web.Request) -> web.Response:
    who = signed_in(request)
    need_auditor(who)
    deps = request.app[DEPS]
    try:
        session = await deps.sessions.get(who.name, request.match_info["id"])
    except NotFound:
        raise web.HTTPNotFound(text="No such session.") from None
    return render(request, "live.html", session=session)


# --- recordings and audit --------------------------------------------------------------


async def recordings_page(request: web.Request) -> web.Response:
    who = signed_in(request)
    need_auditor(who)
    deps = request.app[DEPS]
    q = request.query.get("q", "").strip()[:200]
    user = request.query.get("user", "")
    target = request.query.get("target", "")
    hits: list[Any] = []
    recordings: list[Any] = []
    more: str | None = None
    if q:
        hits = list(await deps.recordings.search(q))
    else:
        recordings, after = await deps.recordings.page(
            user=user or None,
            target=target or None,
            limit=paging.limit(request),
            after=paging.cursor(request),
        )
        more = paging.next_url(request, paging.Page(recordings, after))
    return render(
        request,
        "recordings.html",
        q=q,
        user=user,
        target=target,
        hits=hits,
        recordings=recordings,
        more=more,
    )


async def replay_page(request: web.Request) -> web.Response:
    who = signed_in(request)
    sid = request.match_info["id"]
    deps = request.app[DEPS]
    try:
        info = await deps.recordings.get(sid)
    except Exception:
        raise web.HTTPNotFound(text="No such recording.") from None
    if not who.user.is_auditor and info.meta.get("user") != who.name:
        raise web.HTTPNotFound(text="No such recording.")
    if info.meta.get("kind") == "http":
        entries, after = await request_timeline(request, info)
        more = None
        if after is not None:
            more = str(request.rel_url.with_query({**request.query, "cursor": after}))
        return render(
            request,
            "http_replay.html",
            info=info,
            entries=[e.as_dict() for e in entries],
            filters={k: request.query.get(k, "") for k in ("method", "status", "path")},
            more=more,
        )
    return render(request, "replay.html", session_id=sid, speeds=SPEEDS)


async def audit_page(request: web.Request) -> web.Response:
    who = signed_in(request)
    need_auditor(who)
    log = request.app[DEPS].services.audit
    check = await log.verify()
    events = (await log.events())[-500:]
    return render(request, "audit.html", check=check, events=list(reversed(events)))


def add_ui_routes(app: web.Application) -> None:
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", my_access)
    app.router.add_get("/access", my_access)  # ?target=NAME preselects it (refusal pages link here)
    app.router.add_get("/approvals", approvals)
    app.router.add_get("/sessions", sessions_page)
    app.router.add_get("/sessions/{id}/live", live_page)
    app.router.add_get("/recordings", recordings_page)
    app.router.add_get("/recordings/{id}", replay_page)
    app.router.add_get("/audit", audit_page)


__all__ = ["ENV", "Deps", "add_ui_routes", "render"]
