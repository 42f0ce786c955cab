"""The web fast path: plain page loads relayed on raw sockets, the rest through aiohttp.

Every connection to the HTTP listener is a ``front.FrontConnection``. A request the fast path
can serve in full without waiting for anything is relayed on raw asyncio transports
(``flight.Flight``): a ``GET`` or ``HEAD`` without a body in the strict subset of
``gateway.http.wire``, for a web target (not the gateway's own pages, not the hand-off), with
a sign-in cookie this node has read within the last seconds (``gateway.signins.targets``: no
database round trip per request), to a live session within its grant that its rule serves
and that no anomaly rule matches, to a target with a kept-alive connection free (or room
for one). The decision is the session's (``LiveHttpSession.fast_check``); a re-check of
access that is due is made first, as on the full path; the headers each way are built by the
same code (``gateway.http.headers``), once for each new head on a connection
(``gateway.http.memo``). Every other request is served by aiohttp (``front`` says how the
connection moves between the two).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.http.fastpool import FastPool
from gateway.http.flight import Flight
from gateway.http.front import Admission, FrontConnection
from gateway.http.handoff import cookie_names
from gateway.http.headers import ClientView
from gateway.http.memo import UpstreamFields
from gateway.http.relay import Exchange
from gateway.http.routing import BadPath
from gateway.http.target import TargetUnusable
from gateway.http.wire import RequestHead, serialize_fields
from gateway.proxies import TrustedProxies

if TYPE_CHECKING:
    from gateway.http.proxy import WebProxy
    from gateway.http.session import LiveHttpSession

SWEEP_SECONDS = 1.0  # how often flights' upstream timeouts are looked at


class FastFront:
    """The listener's protocol factory: each connection starts on the fast path."""

    def __init__(
        self,
        proxy: WebProxy,
        server: Callable[[], Any],
        trusted: TrustedProxies,
        admission: Admission,
        *,
        header_timeout: float,
        idle_timeout: float,
    ) -> None:
        self.proxy = proxy
        self.server = server  # aiohttp's request handler for a connection, when it needs one
        self.trusted = trusted  # balancers whose X-Forwarded-For/-Proto count, as in the web app
        self.admission = admission
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.pool = FastPool(proxy.core.relay.pool.timeouts)
        self.connections: set[FrontConnection] = set()
        self.flights: set[Flight] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    def __call__(self) -> FrontConnection:
        if self._sweeper is None:
            self._sweep()
        return FrontConnection(self)

    def _sweep(self) -> None:
        now = time.monotonic()
        for flight in list(self.flights):
            flight.check_timeouts(now)
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_SECONDS, self._sweep)

    def plan(self, conn: FrontConnection, head: RequestHead) -> Flight | None:
        """The flight for a request the fast path serves, or None for the full path."""
        if not head.bodiless_read:
            return None
        proxy = self.proxy
        peer = conn.client_ip
        scheme = self.trusted.scheme(peer, head.headers.get("X-Forwarded-Proto", ""), "http")
        try:
            route = proxy.router.route(head.host, head.target)
        except BadPath:
            return None
        if route is None or route.is_control or not route.path:
            return None
        value = conn.cookie(head.headers.get("Cookie", ""), cookie_names(route, scheme == "https"))
        login = proxy.handoff.cached(value, route) if value else None
        if login is None or login.ended is not None:
            return None
        access = login.access
        session = proxy.sessions.get((access.user, access.target, access.account, access.grant_id))
        if session is None:
            return None
        served = session.fast_check(head.method, route)
        if served is None:
            return None
        try:
            pool = self.pool.pool(session.web)
        except TargetUnusable:
            return None
        if not pool.idle and not pool.room:
            return None
        try:
            assertion = session.assertion()
        except ValueError:
            return None  # the grant has ended: the full path says so
        memo = conn.upstream_fields
        if memo is None or not memo.fits(head.block, route.prefix, session, assertion):
            memo = self._fields(conn, head, route.prefix, session, assertion, scheme)
            if memo is None:
                return None  # the full path says why it cannot be sent
            conn.upstream_fields = memo
        query = f"?{route.query}" if route.query else ""
        line = f"{head.method} {session.web.upstream_path(served)}{query} HTTP/1.1\r\n"
        upstream_request = line.encode("utf-8") + memo.fields
        exchange = Exchange(head.method, served, route.query)
        self.proxy.core.metrics.http_fastpath.inc()
        conn.authenticated()  # a signed-in person's live session
        return Flight(conn, session, pool, memo.view, exchange, upstream_request, head.close)

    def _fields(
        self,
        conn: FrontConnection,
        head: RequestHead,
        prefix: str,
        session: LiveHttpSession,
        assertion: str | None,
        scheme: str,
    ) -> UpstreamFields | None:
        host = head.host.lower()
        view = ClientView(
            client_ip=self.trusted.client(conn.client_ip, head.headers.get("X-Forwarded-For", "")),
            proto=scheme,
            host=head.host,
            public_origin=f"{scheme}://{host}",
            prefix=prefix,
            gateway_origin=self.proxy.router.gateway_origin(scheme, head.host),
        )
        try:
            fields = serialize_fields(
                session.upstream_headers(head.headers, view, assertion=assertion)
            )
        except ValueError:
            return None
        return UpstreamFields(
            head.block, prefix, session, session.credential, assertion, view, fields
        )

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            conn.abort()
        self.pool.close()


class FastSite(web.TCPSite):
    """aiohttp's TCP site with every connection starting on the fast path."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        front: FastFront,
        sock: socket.socket | None = None,
    ) -> None:
        super().__init__(runner, host, port)
        self._front = front
        self._sock = sock  # a worker's shared listening socket

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            self._server = await loop.create_server(self._front, sock=self._sock)
            return
        self._server = await loop.create_server(
            self._front, self._host, self._port, reuse_address=self._reuse_address
        )
