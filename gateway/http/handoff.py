"""Signing in to a target's origin: a one-time, state-bound hand-off from the gateway.

The person signs in on the gateway's own origin (password + TOTP). Their browser then needs a
cookie on the *target's* origin, which the gateway's origin cannot set. The hand-off, in
three redirects (``/t/<target>`` before each target path in path-prefix mode):

1. ``GET <gateway>/open/<target>[?account=A&next=/path]`` (signed in; the person may use the
   target now) redirects to ``<target>/__lockgate/start``;
2. ``/__lockgate/start`` sets a short-lived random *state* cookie on the target's origin and
   redirects back to ``<gateway>/open/<target>?state=<sha256 of the state>``;
3. the gateway checks access again and issues a single-use *code* (at most ``CODE_TTL``),
   bound to the person, target, account, grant and that state's hash, and redirects to
   ``<target>/__lockgate/handoff?code=...``, which consumes the code, compares the hash of
   the browser's state cookie with the bound one in constant time, and only then sets the
   target's session cookie and sends the person to the page they asked for.

Security decisions. A code alone is worthless: it is redeemed only by the browser that holds
the matching state cookie, so an attacker's code opened in a victim's browser fails (no
login CSRF, no session fixation), and a code seen in a log or history was already used.
Only the state's hash travels through the gateway's URL. The session cookie is host-only
(no ``Domain``), ``HttpOnly``, ``SameSite=Lax`` (top-level navigation works, cross-site
subrequests carry nothing), ``Secure`` with ``__Host-`` prefix on TLS (so no other origin, a
sibling target included, can plant it), and lives no longer than the grant. Its value is
random; the database keeps only its SHA-256.

Path-prefix mode (no wildcard DNS): the target shares the gateway's origin, so its cookies
are confined by ``Path=/t/<target>/`` alone and cannot take ``__Host-``; scripts of any app
on that origin can reach every path there. Without TLS, no ``__Host-`` either: a sibling
origin's script could plant a state cookie. Use per-target origins on TLS in production.

Any node may answer any step: codes and sign-ins are rows in the database, holding only
SHA-256 digests of the secret values (``gateway.signins.targets``, which also keeps what the
fast path reads in memory for a few seconds and carries their end to every node).
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from urllib.parse import urlencode

from aiohttp import web

from gateway.http import refusal
from gateway.http.refusal import Refusal
from gateway.http.routing import CONTROL, Route, Router
from gateway.refusals import RefusalLog
from gateway.signins.stored import digest
from gateway.signins.targets import Code, Login, TargetSignIns, WebAccess

CODE_TTL = timedelta(seconds=60)
STATE_TTL = timedelta(seconds=120)
LOGIN_TTL = timedelta(hours=12)  # and never past the grant's end
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ACCOUNT = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_NEXT = re.compile(r"/(?![/\\])[\x21-\x7e]{0,2047}")


Clock = Callable[[], datetime]
# (user, target, account or None, the gateway's origin for links) -> the access, or why not
Authorize = Callable[[str, str, str | None, str, str], Awaitable[WebAccess | Refusal]]


def safe_next(value: str | None) -> str:
    """A path on the target's root to land on; anything else (absolute URLs, ``//host``,
    backslashes, control characters) becomes ``/``."""
    if value and _NEXT.fullmatch(value):
        return value
    return "/"


@dataclass(frozen=True)
class CookieNames:
    session: str
    state: str
    path: str  # the session cookie's Path
    state_path: str


def cookie_names(route: Route, secure: bool) -> CookieNames:
    """The gateway's cookies on a target's origin (all start with ``lockgate`` or
    ``__Host-lockgate``, names the proxy never passes to or accepts from the app)."""
    return _cookie_names(route.mode == "path", route.target, route.prefix, secure)


@functools.lru_cache(maxsize=1024)  # asked on every request
def _cookie_names(path_mode: bool, target: str, prefix: str, secure: bool) -> CookieNames:
    if path_mode:
        base = prefix + "/"
        return CookieNames(
            f"lockgate_t_{target}",
            f"lockgate_state_{target}",
            base,
            base + CONTROL.strip("/") + "/",
        )
    if secure:
        return CookieNames("__Host-lockgate", "__Host-lockgate_state", "/", "/")
    return CookieNames("lockgate_target", "lockgate_state", "/", "/")


class Handoff:
    """The hand-off's endpoints and the sign-ins it creates."""

    def __init__(
        self,
        router: Router,
        authorize: Authorize,
        clock: Clock,
        signins: TargetSignIns,
        refusals: RefusalLog,
    ) -> None:
        self.router = router
        self.authorize = authorize
        self.clock = clock
        self.signins = signins
        self.refusals = refusals

    # --- sign-ins ----------------------------------------------------------------------
    async def login(self, request: web.BaseRequest, route: Route, secure: bool) -> Login | None:
        """The sign-in the request's target cookie stands for, if it is valid for this
        target and not past its grant; raises when the database cannot say."""
        value = request.cookies.get(cookie_names(route, secure).session)
        return await self.signins.login(value, route.target) if value else None

    def cached(self, value: str, route: Route) -> Login | None:
        """``login`` from this node's memory only (for the fast path, which cannot wait)."""
        return self.signins.cached(value, route.target)

    def end_logins(self, access: WebAccess, reason: str) -> None:
        """Every sign-in to that (user, target, account, grant) now shows ``reason``, on
        every node."""
        self.signins.ended_here(access, reason)

    # --- on the gateway's origin -------------------------------------------------------
    async def open(self, request: web.Request, user: str | None, scheme: str) -> web.StreamResponse:
        """``GET /open/{target}``: steps 1 and 3."""
        target = request.match_info.get("target", "")
        gateway = self.router.gateway_origin(scheme, request.host)
        if user is None:
            return redirect("/login?" + urlencode({"next": request.path_qs}))
        if not self.router.reachable(target):
            return refusal.page(refusal.no_target(target, gateway))
        account = request.query.get("account") or None
        if account is not None and not _ACCOUNT.fullmatch(account):
            return refusal.page(refusal.bad_request(target, "invalid account name"))
        next_path = safe_next(request.query.get("next"))
        decided = await self.authorize(user, target, account, gateway, request.remote or "")
        if isinstance(decided, Refusal):
            return refusal.page(decided)
        base = self.router.target_base(target, scheme, request.host) + CONTROL.strip("/")
        state = request.query.get("state")
        if state is None:
            query = {"next": next_path} | ({"account": account} if account else {})
            return redirect(f"{base}/start?{urlencode(query)}")
        if not _HEX64.fullmatch(state):
            return refusal.page(refusal.bad_request(target, "the sign-in link is not valid"))
        code = await self.signins.new_code(decided, state, next_path, CODE_TTL)
        return redirect(f"{base}/handoff?{urlencode({'code': code})}")

    # --- on the target's origin --------------------------------------------------------
    async def control(
        self, request: web.BaseRequest, route: Route, scheme: str
    ) -> web.StreamResponse:
        """``/__lockgate/start`` and ``/__lockgate/handoff`` (steps 2 and 4); anything else
        under ``/__lockgate/`` is not found. Never proxied."""
        gateway = self.router.gateway_origin(scheme, request.host)
        secure = scheme == "https"
        names = cookie_names(route, secure)
        action = route.path[len(CONTROL) :]
        if request.method not in ("GET", "HEAD"):
            return refusal.page(refusal.bad_request(route.target, "use GET"))
        if action == "start":
            return self._start(request, route, gateway, names, secure)
        if action == "handoff":
            return await self._finish(request, route, gateway, names, secure)
        return refusal.page(replace(refusal.bad_request(route.target, "nothing here"), status=404))

    def _start(
        self, request: web.BaseRequest, route: Route, gateway: str, names: CookieNames, secure: bool
    ) -> web.StreamResponse:
        state = secrets.token_urlsafe(32)
        query = {"state": digest(state), "next": safe_next(request.query.get("next"))}
        account = request.query.get("account")
        if account and _ACCOUNT.fullmatch(account):
            query["account"] = account
        response = redirect(f"{refusal.open_link(gateway, route.target)}?{urlencode(query)}")
        response.set_cookie(
            names.state,
            state,
            max_age=int(STATE_TTL.total_seconds()),
            path=names.state_path,
            secure=secure,
            httponly=True,
            samesite="Lax",
        )
        return response

    async def _finish(
        self, request: web.BaseRequest, route: Route, gateway: str, names: CookieNames, secure: bool
    ) -> web.StreamResponse:
        code = request.query.get("code", "")
        try:
            pending = await self.signins.take_code(code) if code else None
        except Exception:  # fail closed: no sign-in without the database
            return refusal.page(refusal.unavailable(route.target))
        state = request.cookies.get(names.state, "")
        now = self.clock()
        why = _invalid(pending, route.target, state, now)
        if why is not None:
            # A link replayed, stolen or guessed: audited (rate-limited per address).
            await self.refusals.refused(
                actor=pending.access.user if pending is not None else "?",
                action="handoff.refused",
                subject=route.target,
                reason=why,
                client=request.remote or "",
                details={"via": "http"},
            )
        if why is not None or pending is None:
            page = refusal.page(
                Refusal(
                    "sign_in",
                    403,
                    "Sign-in link not valid",
                    "This sign-in link was already used, has expired, or was opened in "
                    "another browser than the one that asked for it.",
                    route.target,
                    "",
                    (("Open through Lockgate", refusal.open_link(gateway, route.target)),),
                )
            )
            page.del_cookie(names.state, path=names.state_path, secure=secure)
            return page
        access = pending.access
        lifetime = min(access.expires_at - now, LOGIN_TTL)
        try:
            value = await self.signins.new_login(access, now + lifetime)
        except Exception:
            return refusal.page(refusal.unavailable(route.target))
        landing = route.prefix + pending.next_path
        response = redirect(landing)
        response.set_cookie(
            names.session,
            value,
            max_age=max(1, int(lifetime.total_seconds())),
            path=names.path,
            secure=secure,
            httponly=True,
            samesite="Lax",
        )
        response.del_cookie(names.state, path=names.state_path, secure=secure)
        return response

    def open_url(self, scheme: str, host: str, route: Route) -> str:
        """Where a browser without a valid sign-in for ``route`` starts the hand-off."""
        gateway = self.router.gateway_origin(scheme, host)
        path = route.path + (f"?{route.query}" if route.query else "")
        return refusal.open_link(gateway, route.target, safe_next(path))


def redirect(location: str) -> web.Response:
    """A 303 that is cached nowhere and tells the next page nothing of this URL."""
    return web.Response(
        status=303,
        headers={
            "Location": location,
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )


def _invalid(pending: Code | None, target: str, state: str, now: datetime) -> str | None:
    """Why a hand-off code does not sign in, or None when it does."""
    if pending is None:
        return "unknown or already used sign-in link"
    if pending.expires <= now:
        return "expired sign-in link"
    if pending.access.target != target:
        return "sign-in link for another target"
    if pending.access.expires_at <= now:
        return "the grant has ended"
    if not state or not secrets.compare_digest(digest(state).encode(), pending.state_hash.encode()):
        return "sign-in link opened in another browser"
    return None
