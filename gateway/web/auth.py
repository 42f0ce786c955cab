"""Who is calling: bearer tokens for scripts, a signed-in cookie for browsers, and CSRF.

- ``Authorization: Bearer lgt_...`` is checked by the policy service (hashed at rest,
  constant-time compare, expiry, disabled users refused). Requests with a token carry no
  ambient credential, so they need no CSRF token.
- Browser sign-in takes a password and, when the user has one, a TOTP code. Failures are
  throttled per user and per address with the same throttle as SSH, audited, and answered
  alike whether or not the user exists. The cookie is an opaque random id (HttpOnly,
  SameSite=Strict, Secure behind TLS); the cluster's database keeps only its SHA-256
  (``gateway.signins.browser``), so any node answers the browser's next request.
- Every state change made with the cookie needs an ``Origin`` (or ``Referer``) of this site and
  the session's CSRF token in ``X-CSRF-Token`` (or a ``csrf`` form field), compared in
  constant time.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from aiohttp import web
from multidict import MultiMapping

from gateway.access import Factor, Where, factors_suffice
from gateway.errors import LoginBusy
from gateway.metrics import Metrics
from gateway.proxies import TrustedProxies
from gateway.services import Services
from gateway.signins.browser import SESSION_TTL, BrowserSessions
from gateway.throttle import Throttle
from gateway.web.problems import Handler, Problem
from policy.models import User
from policy.service import PolicyService

log = logging.getLogger(__name__)
COOKIE = "lockgate_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    user: User
    via: str  # "token" or "cookie"
    csrf: str = ""
    signed_in_via: str = ""  # for a cookie: "password" or "oidc:<provider>"
    signed_in_at: datetime | None = None
    signed_in_methods: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return self.user.name


PRINCIPAL = web.RequestKey("principal", Principal)


def principal(request: web.Request) -> Principal:
    """The signed-in caller, or 401."""
    who = request.get(PRINCIPAL)
    if who is None:
        raise Problem(401, "unauthorized", "sign in or send a bearer token")
    assert isinstance(who, Principal)
    return who


def scheme(request: web.Request) -> str:
    """``https`` behind a trusted TLS-terminating proxy that says so (``forwarded`` set the
    request's scheme from its ``X-Forwarded-Proto``), else the connection's own."""
    return request.scheme


def set_session_cookie(response: web.StreamResponse, request: web.Request, value: str) -> None:
    """The gateway's sign-in cookie: host-only, HttpOnly, SameSite=Strict, Secure on TLS."""
    response.set_cookie(
        COOKIE,
        value,
        httponly=True,
        samesite="Strict",
        secure=scheme(request) == "https",
        max_age=int(SESSION_TTL.total_seconds()),
        path="/",
    )


def scheme_of(
    trusted: TrustedProxies, peer: str, headers: MultiMapping[str], connection: str = "http"
) -> str:
    """``scheme`` from a request's headers, its peer and its connection's own scheme:
    ``X-Forwarded-Proto`` counts only from a trusted proxy."""
    return trusted.scheme(peer, headers.get("X-Forwarded-Proto", ""), connection)


def same_origin(request: web.Request) -> bool:
    """The request comes from a page of this site (Origin, else Referer)."""
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source:
        return False
    parts = urlsplit(source)
    return parts.scheme == scheme(request) and parts.netloc == request.host


def client_address(request: web.Request) -> str:
    return request.remote or "?"


class Authenticator:
    def __init__(self, policy: PolicyService, sessions: BrowserSessions) -> None:
        self.policy = policy
        self.sessions = sessions

    async def identify(self, request: web.Request) -> Principal | None:
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Problem(401, "unauthorized", "use: Authorization: Bearer <token>")
            user = await self.policy.authenticate_token(token.strip())
            if user is None:
                raise Problem(401, "unauthorized", "the token is unknown, expired or revoked")
            return Principal(user, "token")
        cookie = request.cookies.get(COOKIE)
        if cookie:
            try:
                session = await self.sessions.lookup(cookie)
            except Exception:  # fail closed: not known to be signed in
                log.warning("a browser session could not be read; treated as signed out")
                return None
            if session is not None:
                try:
                    user = await self.policy.get_user(session.user)
                except Exception:
                    return None
                if not user.disabled:
                    return Principal(
                        user, "cookie", session.csrf, session.via, session.at, session.methods
                    )
        return None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/static/") or request.path in ("/healthz", "/readyz"):
            return await handler(request)
        who = await self.identify(request)
        if who is not None:
            request[PRINCIPAL] = who
            # Sign-in has no session yet and checks its Origin itself.
            if (
                who.via == "cookie"
                and request.method not in SAFE_METHODS
                and request.path != "/login"
            ):
                await check_csrf(request, who.csrf)
        return await handler(request)


async def check_csrf(request: web.Request, expected: str) -> None:
    if not same_origin(request):
        raise Problem(403, "csrf", "the request does not come from a Lockgate page")
    sent = request.headers.get("X-CSRF-Token", "")
    if not sent and request.content_type == "application/x-www-form-urlencoded":
        sent = str((await request.post()).get("csrf", ""))
    if not secrets.compare_digest(sent.encode(), expected.encode()):
        raise Problem(403, "csrf", "missing or wrong CSRF token; reload the page")


class SignIn:
    """Password + TOTP sign-in for browsers, throttled like SSH logins; which factors
    suffice is ``gateway.access.factors_suffice`` (for the web: always both)."""

    def __init__(
        self, services: Services, throttle: Throttle, sessions: BrowserSessions, metrics: Metrics
    ) -> None:
        self.services = services
        self.metrics = metrics
        self.throttle = throttle
        self.sessions = sessions

    async def attempt(
        self, name: str, password: str, code: str, address: str
    ) -> tuple[str, str] | None:
        """(cookie, csrf) or None; the caller shows one message for every failure."""
        name = name.strip()[:64]
        keys = self.throttle.login_keys(name, address)
        if not name or await self.throttle.blocked(*keys):
            await self._failed(name, address, keys, "throttled")
            return None
        try:
            user = await self.services.access.password_user(name, password)
        except LoginBusy:  # not judged, so not a failure of this person
            self.metrics.auth_failures.labels("busy").inc()
            return None
        presented = {Factor.PASSWORD}
        if (
            user is not None
            and user.totp_enabled
            and await self.services.access.totp_ok(name, code)
        ):
            presented.add(Factor.TOTP)
        if user is None or not factors_suffice(user, presented, Where.WEB):
            await self._failed(name, address, keys, "password+totp")
            return None
        await self.throttle.succeeded(*keys)
        await self.services.audit.record(
            actor=name, action="auth.success", subject=name, details={"via": "web", "addr": address}
        )
        return await self.sessions.create(name)

    async def _failed(self, name: str, address: str, keys: tuple[str, ...], method: str) -> None:
        await self.throttle.failed(*keys)
        self.metrics.auth_failures.labels("web").inc()
        await self.services.audit.record(
            actor=name or "?",
            action="auth.failure",
            subject=name or "?",
            details={"via": "web", "method": method, "addr": address},
        )
