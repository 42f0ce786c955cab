"""The browser's side of OpenID Connect sign-in and of the SSH device login.

- ``GET /auth/oidc/{provider}/start?next=`` sends the browser to the provider, with a cookie
  (HttpOnly, SameSite=Lax: it must come back on the provider's cross-site redirect, and only
  on a top-level GET) that binds the flow to this browser.
- ``GET /auth/oidc/{provider}/callback`` finishes it (``gateway.oidc.signin``). On success
  the session cookie (SameSite=Strict) is set and a page moves on to ``next`` with a
  same-site navigation, so the Strict cookie is sent from the first request on.
- ``GET /ssh/{code}`` shows a pending SSH login (who, from where) and ``POST`` approves or
  denies it; approving needs a browser signed in as that user through the identity
  provider within the last minutes (CSRF-checked like every state change).
"""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from gateway.access import Factor, Where, factors_suffice
from gateway.oidc.accounts import SignInRefused
from gateway.oidc.client import ProviderError
from gateway.oidc.device import FRESH
from gateway.oidc.federation import Federation
from gateway.oidc.flows import FLOW_TTL
from gateway.web.auth import (
    PRINCIPAL,
    Principal,
    client_address,
    scheme,
    set_session_cookie,
)
from gateway.web.deps import DEPS
from gateway.web.ui import login_context, render, safe_next

BINDING = "lockgate_oidc"
BINDING_PATH = "/auth/oidc/"


def _federation(request: web.Request) -> Federation:
    federation = request.app[DEPS].federation
    if federation is None or federation.signin.provider(request.match_info["name"]) is None:
        raise web.HTTPNotFound(text="No such identity provider.")
    return federation


def _callback_url(request: web.Request) -> str:
    name = request.match_info["name"]
    return f"{scheme(request)}://{request.host}/auth/oidc/{name}/callback"


def _refused(request: web.Request, message: str, status: int) -> web.Response:
    return render(
        request,
        "login.html",
        status=status,
        who=None,
        **login_context(request, "/", f"Sign-in failed: {message}"),
    )


async def start(request: web.Request) -> web.Response:
    federation = _federation(request)
    next_url = safe_next(request.query.get("next", "/"))
    try:
        started = await federation.signin.start(
            request.match_info["name"], _callback_url(request), next_url
        )
    except ProviderError:
        return _refused(request, "the identity provider cannot be reached", 502)
    response = web.HTTPSeeOther(started.url)
    response.set_cookie(
        BINDING,
        started.binding,
        httponly=True,
        samesite="Lax",
        secure=scheme(request) == "https",
        max_age=int(FLOW_TTL.total_seconds()),
        path=BINDING_PATH,
    )
    raise response


async def callback(request: web.Request) -> web.Response:
    federation = _federation(request)
    name = request.match_info["name"]
    try:
        done = await federation.signin.finish(
            name,
            dict(request.query),
            request.cookies.get(BINDING, ""),
            client_address(request),
        )
    except SignInRefused as refused:
        request.app[DEPS].metrics.auth_failures.labels("oidc").inc()
        response = _refused(request, str(refused), 403)
        response.del_cookie(BINDING, path=BINDING_PATH)
        return response
    if not factors_suffice(done.user, {Factor.IDP}, Where.WEB):
        return _refused(request, f"the user {done.user.name} is disabled", 403)
    cookie, _ = await request.app[DEPS].browser.create(
        done.user.name, via=f"oidc:{name}", methods=done.methods
    )
    response = render(request, "signed_in.html", who=None, next_url=done.next_url)
    response.del_cookie(BINDING, path=BINDING_PATH)
    set_session_cookie(response, request, cookie)
    return response


def _fresh_idp(request: web.Request, who: Principal | None, user: str) -> bool:
    """``who`` is ``user``, signed in through an identity provider at most ``FRESH`` ago."""
    if who is None or who.name != user or not who.signed_in_via.startswith("oidc:"):
        return False
    now = request.app[DEPS].services.policy.now()
    return who.signed_in_at is not None and now - who.signed_in_at <= FRESH


async def device_page(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    code = request.match_info["code"]
    login = await deps.federation.devices.pending(code) if deps.federation is not None else None
    if login is None:
        return render(
            request, "device.html", status=404, login=None, fresh=False, providers=[], done=None
        )
    who = request.get(PRINCIPAL)
    fresh = _fresh_idp(request, who, login.user)
    assert deps.federation is not None
    here = request.path
    providers = [
        (p.button, "/auth/oidc/" + p.name + "/start?" + urlencode({"next": here}))
        for p in deps.federation.signin.providers.values()
    ]
    return render(request, "device.html", login=login, fresh=fresh, providers=providers, done=None)


async def device_decide(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    who = request.get(PRINCIPAL)
    if not isinstance(who, Principal) or who.via != "cookie" or deps.federation is None:
        raise web.HTTPForbidden(text="Sign in with your identity provider first.")
    code = request.match_info["code"]
    login = await deps.federation.devices.pending(code)
    if login is None or not _fresh_idp(request, who, login.user):
        raise web.HTTPForbidden(text="This SSH login is not yours to approve, or has expired.")
    form = await request.post()
    approve = form.get("decision") == "approve"
    await deps.services.audit.record(  # first: no audit, no login
        actor=who.name,
        action="auth.device.approve" if approve else "auth.device.deny",
        subject=who.name,
        details={"ssh_client": login.address, "addr": client_address(request)},
    )
    await deps.federation.devices.decide(login.code, who.name, approve, who.signed_in_methods)
    return render(request, "device.html", login=None, fresh=False, providers=[], done=approve)


def add_oidc_routes(app: web.Application) -> None:
    app.router.add_get("/auth/oidc/{name}/start", start)
    app.router.add_get("/auth/oidc/{name}/callback", callback)
    app.router.add_get("/ssh/{code}", device_page)
    app.router.add_post("/ssh/{code}", device_decide)
