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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jinja2
from aiohttp import web

from gateway.errors import UNAVAILABLE
from gateway.report.build import report_for
from gateway.web.api_sessions import request_timeline
from gateway.web.auth import (
    COOKIE,
    PRINCIPAL,
    Principal,
    client_address,
    same_origin,
    scheme,
    set_session_cookie,
)
from gateway.web.deps import DEPS, Deps
from policy.durations import format_duration
from policy.errors import InvalidInput, NotFound
from policy.models import RequestState

TEMPLATES = Path(__file__).parent / "templates"
SPEEDS = ("0.5", "1", "2", "4", "8", "16")


# --- rendering -----------------------------------------------------------------------


def timestamp(value: datetime | None) -> str:
    """A moment as ISO 8601 to the second (what ``app.js`` counts down to)."""
    return "-" if value is None else value.isoformat(timespec="seconds")


def when(value: datetime | None) -> str:
    """A moment as people read it: to the second, with its zone."""
    if value is None:
        return "-"
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(value: timedelta | None) -> str:
    return "-" if value is None else format_duration(value)


def seconds(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}s"


def details(value: Mapping[str, Any]) -> str:
    """An audit event's details as ``key=value`` words, lists joined by commas."""

    def word(v: Any) -> str:
        if isinstance(v, list | tuple):
            return ",".join(word(x) for x in v) or "-"
        if isinstance(v, bool):
            return "yes" if v else "no"
        return "-" if v is None or v == "" else str(v)

    return " ".join(f"{k}={word(v)}" for k, v in value.items())


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
    env.filters.update(
        timestamp=timestamp, when=when, duration=duration, seconds=seconds, details=details
    )
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


def error_page(request: web.Request, status: int, title: str, message: str) -> web.HTTPException:
    """A styled page (the layout and its navigation) for a refused or missing page."""
    return _error_page(request.get(PRINCIPAL), status, title, message)


def _error_page(who: Principal | None, status: int, title: str, message: str) -> web.HTTPException:
    text = ENV.get_template("error.html").render(
        who=who, title=title, message=message, status=status
    )
    error = web.HTTPForbidden if status == 403 else web.HTTPNotFound
    return error(text=text, content_type="text/html")


def need_auditor(who: Principal) -> None:
    """Auditors and admins only: anyone else gets the styled 403 page."""
    if not who.user.is_auditor:
        raise _error_page(who, 403, "Not for you", "This page is for auditors and admins.")


def forbidden_unless_auditor(request: web.Request, who: Principal) -> None:
    need_auditor(who)


async def favicon(request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently("/static/favicon.svg")


# --- sign-in -------------------------------------------------------------------------


def safe_next(value: str) -> str:
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


def login_context(request: web.Request, next_url: str, message: str) -> dict[str, Any]:
    """What the sign-in page shows: the form, and one button per identity provider."""
    federation = request.app[DEPS].federation
    providers = []
    if federation is not None:
        providers = [
            (p.button, f"/auth/oidc/{p.name}/start?" + urlencode({"next": next_url}))
            for p in federation.signin.providers.values()
        ]
    return {"next_url": next_url, "message": message, "providers": providers}


async def login_page(request: web.Request) -> web.Response:
    next_url = safe_next(request.query.get("next", "/"))
    return render(request, "login.html", who=None, **login_context(request, next_url, ""))


async def login(request: web.Request) -> web.Response:
    if not same_origin(request):
        raise web.HTTPForbidden(text="Sign-in must come from the Lockgate sign-in page.")
    form = await request.post()
    next_url = safe_next(str(form.get("next", "/")))
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
            **login_context(
                request,
                next_url,
                "The gateway cannot reach its database right now; try again in a minute.",
            ),
        )
    if result is None:
        return render(
            request,
            "login.html",
            status=401,
            who=None,
            **login_context(request, next_url, "Sign-in failed."),
        )
    cookie, _ = result
    response = web.HTTPSeeOther(next_url)
    set_session_cookie(response, request, cookie)
    raise response


async def logout(request: web.Request) -> web.Response:
    signed_in(request)  # the middleware has checked Origin and the CSRF token
    await request.app[DEPS].browser.end(request.cookies.get(COOKIE, ""))
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
    deps = request.app[DEPS]
    connect = {g.id: deps.ssh_line(who.name, g.account, g.target) for g in grants}
    return render(
        request,
        "my_access.html",
        connect=connect,
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
    # ?request=ID: the one a notification linked to, first; said so when already decided.
    wanted, decided = request.query.get("request", ""), None
    if wanted:
        if any(r.id == wanted for r in pending):
            pending.sort(key=lambda r: r.id != wanted)
        else:
            try:
                decided = await policy.get_request(who.name, wanted)
            except NotFound:
                decided = None
    return render(request, "approvals.html", pending=pending, wanted=wanted, decided=decided)


# --- sessions ------------------------------------------------------------------------


async def live_page(request: web.Request) -> web.Response:
    who = signed_in(request)
    forbidden_unless_auditor(request, who)
    deps = request.app[DEPS]
    try:
        session = await deps.sessions.get(who.name, request.match_info["id"])
    except NotFound:
        raise error_page(request, 404, "Not found", "No such session.") from None
    return render(request, "live.html", session=session)


# --- recordings and audit --------------------------------------------------------------


async def replay_page(request: web.Request) -> web.Response:
    who = signed_in(request)
    sid = request.match_info["id"]
    deps = request.app[DEPS]
    try:
        info = await deps.recordings.get(sid)
    except Exception:
        raise error_page(request, 404, "Not found", "No such recording.") from None
    if not who.user.is_auditor and info.meta.get("user") != who.name:
        raise error_page(request, 404, "Not found", "No such recording.")
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


async def provisioned_page(request: web.Request) -> web.Response:
    """Auditors and admins: what Lockgate made on which target, for which grant, and where
    each thing is in its life (a removal being retried shows its last error)."""
    who = signed_in(request)
    need_auditor(who)
    target = request.query.get("target") or None
    items = await request.app[DEPS].services.provisioner.list(target)
    return render(request, "provisioned.html", items=list(reversed(items)), target=target or "")


async def report_page(request: web.Request) -> web.Response:
    """The compliance report for auditors, with links to its exports (the API's files)."""
    who = signed_in(request)
    need_auditor(who)
    since = request.query.get("since", "30d")
    target, user = request.query.get("target", ""), request.query.get("user", "")
    query = urlencode(
        {k: v for k, v in (("since", since), ("target", target), ("user", user)) if v}
    )
    context: dict[str, Any] = {"since": since, "target": target, "user": user, "error": ""}
    try:
        context["report"] = await report_for(
            request.app[DEPS].services,
            who.name,
            since=since,
            target=target or None,
            user=user or None,
            public_url=f"{scheme(request)}://{request.host}",
        )
    except InvalidInput as exc:
        context["error"] = str(exc)
    return render(request, "report.html", export=f"/api/v1/report?{query}", **context)


def add_ui_routes(app: web.Application) -> None:
    from gateway.web.ui_lists import add_list_routes  # the listings build on this module

    add_list_routes(app)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", my_access)
    app.router.add_get("/access", my_access)  # ?target=NAME preselects it (refusal pages link here)
    app.router.add_get("/approvals", approvals)
    app.router.add_get("/sessions/{id}/live", live_page)
    app.router.add_get("/recordings/{id}", replay_page)
    app.router.add_get("/provisioned", provisioned_page)
    app.router.add_get("/report", report_page)


__all__ = ["ENV", "Deps", "add_ui_routes", "render"]
