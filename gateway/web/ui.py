"""The web UI: server-rendered pages; actions go through the JSON API from ``app.js``.

Every value shown is escaped here; the scripts insert terminal content with ``textContent``
only. Pages need a signed-in browser (else a redirect to ``/login``); what each page lists is
what the API would return to the same person.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

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

NAV = (
    ("/", "My access", False),
    ("/approvals", "Approvals", False),
    ("/sessions", "Sessions", False),
    ("/recordings", "Recordings", True),
    ("/audit", "Audit log", True),
)

NO_TARGET = "<p>No target may be requested.</p>"


def e(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return html.escape(value.isoformat(timespec="seconds"))
    return html.escape(str(value), quote=True)


def page(
    title: str, body: str, who: Principal | None, *, scripts: Sequence[str] = ()
) -> web.Response:
    nav = ""
    meta = ""
    if who is not None:
        links = "".join(
            f'<a href="{href}">{label}</a>'
            for href, label, auditor in NAV
            if not auditor or who.user.is_auditor
        )
        nav = (
            f'<nav>{links}<span class="who">{e(who.name)}</span>'
            '<form method="post" action="/logout" class="inline">'
            f'<input type="hidden" name="csrf" value="{e(who.csrf)}">'
            '<button type="submit">Sign out</button></form></nav>'
        )
        meta = f'<meta name="csrf-token" content="{e(who.csrf)}">'
    tags = "".join(f'<script src="/static/{s}" defer></script>' for s in ("app.js", *scripts))
    text = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{e(title)} · Lockgate</title>{meta}"
        '<link rel="stylesheet" href="/static/style.css">'
        f"{tags}</head><body>{nav}<main><h1>{e(title)}</h1>{body}</main></body></html>"
    )
    return web.Response(text=text, content_type="text/html")


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], empty: str = "Nothing here."
) -> str:
    """``rows`` hold HTML already escaped by the caller."""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="empty">{e(empty)}</p>'
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def api_form(action: str, fields: str, button: str, *, method: str = "POST", cls: str = "") -> str:
    return (
        f'<form data-api="{e(action)}" data-method="{method}" class="{cls}">{fields}'
        f'<button type="submit">{e(button)}</button><span class="error" data-error></span></form>'
    )


def signed_in(request: web.Request) -> Principal:
    who = request.get(PRINCIPAL)
    if not isinstance(who, Principal):
        raise web.HTTPSeeOther("/login?" + urlencode({"next": request.path_qs}))
    return who


def need_auditor(who: Principal) -> None:
    if not who.user.is_auditor:
        raise web.HTTPForbidden(text="This page is for auditors and admins.")


def countdown(until: datetime) -> str:
    return f'<span data-expires="{e(until)}">{e(until)}</span>'


# --- sign-in -------------------------------------------------------------------------


def _login_form(next_url: str, message: str = "") -> str:
    note = f'<p class="error" role="alert">{e(message)}</p>' if message else ""
    return (
        f'{note}<form method="post" action="/login" class="login">'
        f'<input type="hidden" name="next" value="{e(next_url)}">'
        '<label>User <input name="user" autocomplete="username" required></label>'
        '<label>Password <input name="password" type="password" '
        'autocomplete="current-password" required></label>'
        '<label>TOTP code <input name="code" inputmode="numeric" '
        'autocomplete="one-time-code"></label>'
        '<button type="submit">Sign in</button></form>'
    )


def _safe_next(value: str) -> str:
    """Only a path on this site: never another host (``//evil``) or a scheme."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


async def login_page(request: web.Request) -> web.Response:
    return page("Sign in", _login_form(_safe_next(request.query.get("next", "/"))), None)


async def login(request: web.Request) -> web.Response:
    if not same_origin(request):
        raise web.HTTPForbidden(text="Sign-in must come from the Lockgate sign-in page.")
    form = await request.post()
    next_url = _safe_next(str(form.get("next", "/")))
    deps = request.app[DEPS]
    result = await deps.signin.attempt(
        str(form.get("user", "")),
        str(form.get("password", "")),
        str(form.get("code", "")),
        client_address(request),
    )
    if result is None:
        response = page("Sign in", _login_form(next_url, "Sign-in failed."), None)
        response.set_status(401)
        return response
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


# --- my access -----------------------------------------------------------------------


async def my_access(request: web.Request) -> web.Response:
    who = signed_in(request)
    deps = request.app[DEPS]
    policy = deps.services.policy
    now = policy.now()
    options = "".join(
        f'<option value="{e(r.target.name)}|{e(a)}">{e(r.target.name)} as {e(a)} '
        f"(rule {e(r.rule.name)}, up to {e(format_duration(r.rule.max_duration))})</option>"
        for r in await policy.requestable(who.name)
        for a in r.accounts
    )
    form = (
        '<form id="request-form" data-api="/api/v1/requests" data-method="POST" '
        'data-split="target">'
        f'<label>Target <select name="target" required>{options}</select></label>'
        '<label>For <input name="duration" placeholder="1h" size=6></label>'
        '<label>Reason <input name="reason" size=40></label>'
        '<label>Ticket <input name="ticket" size=12></label>'
        '<button type="submit">Request access</button><span class="error" data-error></span></form>'
    )
    requests = await policy.list_requests(who.name, mine_only=True)
    request_rows = [
        (
            e(r.id),
            e(r.target),
            e(r.account),
            e(format_duration(r.duration)),
            f'<span class="state">{e(r.state)}</span>',
            e(r.reason),
            api_form(f"/api/v1/requests/{r.id}/cancel", "", "Cancel", cls="inline")
            if r.state == RequestState.PENDING
            else "",
        )
        for r in requests[:50]
    ]
    grants = [g for g in await policy.list_grants(who.name, mine_only=True) if g.is_active(now)]
    grant_rows = [
        (
            e(g.id),
            e(g.target),
            e(g.account),
            countdown(g.expires_at),
            api_form(
                f"/api/v1/grants/{g.id}/extend",
                '<input name="duration" placeholder="30m" size=5 required>'
                '<input name="reason" placeholder="reason" size=20 required>',
                "Extend",
                cls="inline",
            ),
        )
        for g in grants
    ]
    body = (
        f"<section><h2>Request access</h2>{form if options else NO_TARGET}</section>"
        "<section><h2>My grants</h2>"
        + table(("grant", "target", "account", "time left", ""), grant_rows, "No active grant.")
        + "</section><section><h2>My requests</h2>"
        + table(("request", "target", "account", "for", "state", "reason", ""), request_rows)
        + "</section>"
    )
    return page("My access", body, who)


# --- approvals -----------------------------------------------------------------------


async def approvals(request: web.Request) -> web.Response:
    who = signed_in(request)
    policy = request.app[DEPS].services.policy
    pending = [
        r for r in await policy.list_requests(who.name, pending_only=True) if r.user != who.name
    ]
    rows = [
        (
            e(r.id),
            e(r.user),
            f"{e(r.account)}@{e(r.target)}",
            e(format_duration(r.duration)),
            e(r.reason),
            e(r.ticket or None),
            api_form(
                f"/api/v1/requests/{r.id}/approve",
                '<input name="comment" placeholder="comment" size=16>',
                "Approve",
                cls="inline",
            )
            + api_form(
                f"/api/v1/requests/{r.id}/deny",
                '<input name="comment" placeholder="why (required)" size=16 required>',
                "Deny",
                cls="inline",
            ),
        )
        for r in pending
    ]
    body = table(
        ("request", "who", "what", "for", "reason", "ticket", "decision"),
        rows,
        "No request waits for you.",
    )
    return page("Approvals", body, who)


# --- sessions ------------------------------------------------------------------------


async def sessions_page(request: web.Request) -> web.Response:
    who = signed_in(request)
    deps = request.app[DEPS]
    live = await deps.sessions.list(who.name, active_only=True)
    rows = []
    for s in live:
        handle = deps.registry.get(s.id)
        up = getattr(handle, "bytes_up", s.bytes_up)
        down = getattr(handle, "bytes_down", s.bytes_down)
        actions = ""
        if who.user.is_auditor:
            actions += f'<a href="/sessions/{e(s.id)}/live">watch</a> '
        if who.user.is_admin:
            actions += api_form(
                f"/api/v1/sessions/{s.id}/terminate",
                '<input name="reason" placeholder="reason (required)" size=18 required>',
                "Terminate",
                cls="inline terminate",
            )
        rows.append(
            (
                e(s.id),
                e(s.user),
                f"{e(s.account)}@{e(s.target)}",
                e(s.client_addr),
                e(s.node),
                e(s.started_at),
                f"{e(up)} ↑ / {e(down)} ↓",
                actions,
            )
        )
    body = table(
        ("session", "who", "where", "from", "node", "since", "bytes", ""), rows, "No live session."
    )
    return page("Live sessions", body, who)


async def live_page(request: web.Request) -> web.Response:
    who = signed_in(request)
    need_auditor(who)
    deps = request.app[DEPS]
    try:
        s = await deps.sessions.get(who.name, request.match_info["id"])
    except NotFound:
        raise web.HTTPNotFound(text="No such session.") from None
    terminate = ""
    if who.user.is_admin:
        terminate = api_form(
            f"/api/v1/sessions/{s.id}/terminate",
            '<input name="reason" placeholder="reason (required)" size=24 required>',
            "Terminate",
            cls="terminate",
        )
    body = (
        f'<p class="facts">{e(s.user)} → {e(s.account)}@{e(s.target)} from {e(s.client_addr)}, '
        f"since {e(s.started_at)}</p>{terminate}"
        f'<p id="live-status" data-session="{e(s.id)}">connecting…</p>'
        '<pre id="screen" class="screen"></pre>'
    )
    return page(f"Live: {s.id}", body, who, scripts=("live.js",))


# --- recordings and audit --------------------------------------------------------------


async def recordings_page(request: web.Request) -> web.Response:
    who = signed_in(request)
    need_auditor(who)
    deps = request.app[DEPS]
    q = request.query.get("q", "").strip()[:200]
    user = request.query.get("user", "")
    target = request.query.get("target", "")
    search = (
        '<form method="get" action="/recordings" class="filters">'
        f'<input name="q" value="{e(q)}" placeholder="search text or commands" size=30>'
        f'<input name="user" value="{e(user)}" placeholder="user" size=10>'
        f'<input name="target" value="{e(target)}" placeholder="target" size=10>'
        '<button type="submit">Search</button></form>'
    )
    if q:
        hits = await deps.recordings.search(q)
        rows: list[tuple[str, ...]] = [
            (
                f'<a href="/recordings/{e(h.session_id)}?t={h.t:.3f}">{e(h.session_id)}</a>',
                e(f"{h.t:.1f}s"),
                e(h.kind),
                f"<code>{e(h.line)}</code>",
            )
            for h in hits
        ]
        results = table(("recording", "at", "kind", "line"), rows, "No match.")
    else:
        infos = await deps.recordings.recent(500)
        rows = [
            (
                f'<a href="/recordings/{e(i.session_id)}">{e(i.session_id)}</a>',
                e(i.meta.get("user")),
                f"{e(i.meta.get('account'))}@{e(i.meta.get('target'))}",
                e(i.started_at),
                e(f"{i.duration:.0f}s"),
                e(i.end_reason),
            )
            for i in infos
            if (not user or i.meta.get("user") == user)
            and (not target or i.meta.get("target") == target)
        ]
        results = table(("recording", "who", "where", "started", "length", "ended by"), rows)
    return page("Recordings", search + results, who)


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
    body = (
        f'<div id="viewer" data-session="{e(sid)}">'
        '<dl id="facts" class="facts"></dl>'
        '<div class="controls">'
        '<button type="button" id="play">Play</button>'
        '<label>Speed <select id="speed">'
        + "".join(
            f'<option value="{s}"{" selected" if s == "1" else ""}>{s}&times;</option>'
            for s in ("0.5", "1", "2", "4", "8", "16")
        )
        + "</select></label>"
        '<label><input type="checkbox" id="skip-idle" checked> skip idle</label>'
        '<span id="clock">0:00</span>'
        '<form id="search" class="inline"><input id="search-text" placeholder="find text" size=18>'
        '<button type="submit">Find</button></form>'
        '<button type="button" id="copy">Copy text</button></div>'
        '<div id="seekbar" class="seekbar">'
        '<input type="range" id="seek" min="0" max="0" step="0.1" value="0">'
        '<div id="markers" class="markers"></div></div>'
        '<ol id="hits" class="hits"></ol>'
        '<pre id="screen" class="screen"></pre></div>'
    )
    return page(f"Replay: {sid}", body, who, scripts=("replay.js",))


async def audit_page(request: web.Request) -> web.Response:
    who = signed_in(request)
    need_auditor(who)
    log = request.app[DEPS].services.audit
    check = await log.verify()
    events = (await log.events())[-500:]
    status = (
        f'<p class="ok">Hash chain intact ({check.count} events).</p>'
        if check.ok
        else f'<p class="error">Hash chain broken at event {e(check.first_bad)}: '
        f"{e(check.problem)}</p>"
    )
    rows = [
        (e(ev.seq), e(ev.at), e(ev.actor), e(ev.action), e(ev.subject), e(_details(ev.details)))
        for ev in reversed(events)
    ]
    return page(
        "Audit log", status + table(("#", "at", "actor", "action", "subject", "details"), rows), who
    )


def _details(details: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in details.items())


def add_ui_routes(app: web.Application) -> None:
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", my_access)
    app.router.add_get("/approvals", approvals)
    app.router.add_get("/sessions", sessions_page)
    app.router.add_get("/sessions/{id}/live", live_page)
    app.router.add_get("/recordings", recordings_page)
    app.router.add_get("/recordings/{id}", replay_page)
    app.router.add_get("/audit", audit_page)


__all__ = ["Deps", "add_ui_routes"]
