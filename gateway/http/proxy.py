"""The web-target proxy on the node's HTTP listener: the one entry for target traffic.

It runs as the outermost middleware of the gateway's web app. Every request is first held to
the framing rules (``gateway.http.framing``); then routing decides: the gateway's own pages
go on to the web app untouched, a target's request never reaches it. For a target:
``/__lockgate/*`` is the hand-off (never proxied), a browser without a valid sign-in is sent
through the hand-off (GET) or refused, an ended sign-in gets the "session terminated" page,
and everything else goes to the person's live session for that target and grant, opened at
its first request. A state-changing request whose ``Origin`` is not the target's own is
refused (another target's page is same-site and would carry the Lax cookie). The gateway's
own headers, cookies and pages never appear on a target's responses: the request is marked
so the web app's security-header hook leaves it alone.

Nothing here decides access: ``gateway.access`` does (through the hand-off's and the
session's checks), and the session core records, watches and ends sessions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime

from aiohttp import web

from gateway.db import completed
from gateway.errors import GatewayError
from gateway.http import refusal
from gateway.http.framing import FramingRefusal, check_framing, refuse
from gateway.http.handoff import Handoff, redirect
from gateway.http.headers import ClientView
from gateway.http.refusal import Refusal
from gateway.http.relay import is_websocket
from gateway.http.routing import BadPath, Route, Router
from gateway.http.session import IDLE_REASON, LiveHttpSession, WebCore
from gateway.http.target import TargetUnusable, web_target
from gateway.signins.targets import Login, TargetSignIns, WebAccess
from policy.service import SessionAuthorization

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_Key = tuple[str, str, str, str]


@dataclass(frozen=True)
class GatewaySite:
    """What the proxy takes from the gateway's own web app (protocol edges do not import
    each other: the composition root hands these over)."""

    scheme: Callable[[web.Request], str]  # http | https, as the web app decides it
    signed_in: Callable[[web.Request], str | None]  # the person signed in to the gateway
    foreign: web.RequestKey[bool]  # marks a response as not the gateway's own
    # marks a request that carried a live web-target session (its connection is then no
    # longer counted among the unauthenticated ones)
    authenticated: web.RequestKey[bool] | None = None


def _refusal_for(auth: SessionAuthorization, target: str, gateway: str) -> Refusal:
    decision = auth.decision
    reason, message = str(decision.reason), str(decision.message)
    if reason == "no_grant":
        return refusal.no_grant(target, gateway)
    if reason in ("user_locked", "target_locked", "user_disabled"):
        return refusal.locked(target, message)
    if reason == "channel_not_allowed":
        return replace(
            refusal.no_grant(target, gateway),
            message=f"Your grant does not cover the web: {message}.",
        )
    return Refusal(reason, 403, "No access right now", message, target)


def _same_origin(request: web.BaseRequest, public_origin: str) -> bool:
    """A state-changing request comes from the target's own pages: its ``Origin`` (sent by
    browsers on such requests) is the target's, or there is none (not a browser). Stops a
    page of a sibling target — same site, so the SameSite=Lax cookie is sent — from
    posting to this one as the person."""
    origin = request.headers.get("Origin")
    if origin is None:
        return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")
    return origin.strip().lower() == public_origin


class WebProxy:
    def __init__(self, core: WebCore, site: GatewaySite, web_domain: str) -> None:
        self.core = core
        self.site = site
        self.router = Router(web_domain)
        services = core.services
        self.signins = TargetSignIns(
            services.maker, core.timer.now, services.config.server.node_name
        )
        self.signins.on_ended.append(self._end_sessions)
        self.handoff = Handoff(
            self.router, self._authorize, core.timer.now, self.signins, core.services.refusals
        )
        self.sessions: dict[_Key, LiveHttpSession] = {}
        self._opening: dict[_Key, asyncio.Lock] = {}
        core.on_end.append(self._ended)

    # --- access ------------------------------------------------------------------------
    async def _decide(
        self,
        user: str,
        target: str,
        account: str | None,
        gateway: str,
        auto: bool,
        client: str,
    ) -> tuple[WebAccess, SessionAuthorization] | Refusal:
        access = self.core.services.access
        try:
            auth = await completed(access.authorize_web(user, target, account, auto_request=auto))
        except Exception:
            log.exception("deciding web access of %s to %s failed", user, target)
            return refusal.unavailable(target)
        if not auth.decision.allowed or auth.grant is None:
            await self._refused(
                user, target, account, client, str(auth.decision.message),
                str(auth.decision.reason),
            )  # fmt: skip
            return _refusal_for(auth, target, gateway)
        if auth.target is None or auth.target.kind != "http":
            await self._refused(user, target, account, client, "not a web target", "no_target")
            return refusal.no_target(target, gateway)
        grant = auth.grant
        web_access = WebAccess(user, target, grant.account, grant.id, grant.expires_at)
        return web_access, auth

    async def _refused(
        self, user: str, target: str, account: str | None, client: str, reason: str, code: str
    ) -> None:
        """A web session refused (no grant, a lock, a rule without the web): audited like
        SSH's, rate-limited per person and address."""
        await self.core.services.refusals.refused(
            actor=user,
            action="session.refused",
            subject=f"{account or ''}@{target}",
            reason=reason,
            client=client,
            details={"code": code, "via": "http"},
        )

    async def _authorize(
        self, user: str, target: str, account: str | None, gateway: str, client: str
    ) -> WebAccess | Refusal:
        decided = await self._decide(user, target, account, gateway, True, client)
        return decided if isinstance(decided, Refusal) else decided[0]

    def _ended(self, access: WebAccess, reason: str) -> None:
        key = (access.user, access.target, access.account, access.grant_id)
        self.sessions.pop(key, None)
        self._opening.pop(key, None)
        if reason != IDLE_REASON:
            self.handoff.end_logins(access, reason)

    async def _end_sessions(self, access: WebAccess, reason: str, at: datetime) -> None:
        """A sign-in ended on another node: this node's session for it ends too, unless it
        started after that end (the person signed in again meanwhile)."""
        session = self.sessions.get(access.key)
        if session is not None and session.ended is None and session.started_at <= at:
            await self.core.registry.terminate(session.id, reason)

    async def _session(
        self, login: Login, request: web.BaseRequest, gateway: str
    ) -> LiveHttpSession | Refusal:
        access = login.access
        key = (access.user, access.target, access.account, access.grant_id)
        session = self.sessions.get(key)
        if session is not None and session.ended is None:
            return session
        lock = self._opening.setdefault(key, asyncio.Lock())
        async with lock:
            session = self.sessions.get(key)
            if session is not None and session.ended is None:
                return session
            decided = await self._decide(
                access.user, access.target, access.account, gateway, False, request.remote or ""
            )
            if isinstance(decided, Refusal):
                return decided
            current, auth = decided
            if auth.target is None:
                return refusal.no_target(access.target, gateway)
            if current.grant_id != access.grant_id:
                return refusal.terminated(access.target, "the grant has ended", gateway)
            try:
                upstream = web_target(auth.target)
            except TargetUnusable as exc:
                return refusal.upstream(access.target, 502, str(exc))
            user = auth.user
            session = LiveHttpSession(
                self.core,
                current,
                auth.target,
                upstream,
                auth.rule,
                sorted(user.roles) if user is not None else (),
                request.remote or "?",
            )
            try:
                await session.open()
            except GatewayError as exc:
                return refusal.upstream(access.target, 502, str(exc))
            except Exception:
                log.exception("opening a web session to %s failed", access.target)
                return refusal.upstream(access.target, 503, "the session could not be started")
            self.sessions[key] = session
        return session

    # --- HTTP --------------------------------------------------------------------------
    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Outermost: framing for every request, then target traffic is served here."""
        problem = check_framing(request)
        if problem is not None:
            request[self.site.foreign] = True
            return await refuse(request, problem)
        try:
            route = self.router.route(request.host, request.raw_path)
        except BadPath as exc:
            request[self.site.foreign] = True
            return await refuse(request, FramingRefusal(400, str(exc)))
        if route is None:
            return await handler(request)
        request[self.site.foreign] = True
        return await self.serve(request, route)

    async def open(self, request: web.Request) -> web.StreamResponse:
        """``GET /open/{target}`` on the gateway's own origin (the "Open" link)."""
        return await self.handoff.open(
            request, self.site.signed_in(request), self.site.scheme(request)
        )

    async def serve(self, request: web.Request, route: Route) -> web.StreamResponse:
        scheme = self.site.scheme(request)
        gateway = self.router.gateway_origin(scheme, request.host)
        if route.mode == "path" and not route.path:
            return redirect(route.prefix + "/" + (f"?{route.query}" if route.query else ""))
        if route.is_control:
            return await self.handoff.control(request, route, scheme)
        try:
            login = await self.handoff.login(request, route, scheme == "https")
        except Exception:  # fail closed: a sign-in that cannot be read is not honoured
            log.warning("a web-target sign-in could not be read; request refused")
            return refusal.page(refusal.unavailable(route.target))
        if login is None:
            if request.method in ("GET", "HEAD") and not is_websocket(request):
                return redirect(self.handoff.open_url(scheme, request.host, route))
            return refusal.page(refusal.sign_in(route.target, gateway, route.path))
        if login.ended is not None:
            return refusal.page(refusal.terminated(route.target, login.ended, gateway))
        public_origin = f"{scheme}://{request.host.lower()}"
        if request.method not in _SAFE and not _same_origin(request, public_origin):
            await self.core.services.refusals.refused(
                actor=login.access.user,
                action="request.refused",
                subject=route.target,
                reason="a request from another site (Origin) was refused",
                client=request.remote or "",
                details={
                    "method": request.method,
                    "origin": request.headers.get("Origin", "")[:200],
                },
            )
            return refusal.page(
                replace(
                    refusal.bad_request(route.target, "a request from another site was refused"),
                    status=403,
                )
            )
        session = await self._session(login, request, gateway)
        if isinstance(session, Refusal):
            return refusal.page(session)
        if self.site.authenticated is not None:
            request[self.site.authenticated] = True
        view = ClientView(
            client_ip=request.remote or "",
            proto=scheme,
            host=request.host,
            public_origin=public_origin,
            prefix=route.prefix,
            gateway_origin=gateway,
        )
        return await session.handle(request, route, view)

    async def aclose(self) -> None:
        await self.signins.aclose()
        await self.core.relay.pool.aclose()
