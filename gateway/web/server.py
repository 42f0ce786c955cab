"""The HTTP listener's connections: what aiohttp's parser refuses, slow and idle clients, and
how many unauthenticated connections one address may hold.

aiohttp answers a request its parser rejects (a malformed request line, an oversized header)
itself, as ``text/plain`` that echoes the input, with none of the app's headers. Here such a
request gets a problem+json document with the security headers, and one log line at info
level (no traceback, no input): anyone can send garbage, so it must not fill the log.

Limits, all per connection and enforced on the event loop's monotonic clock:

- ``header_timeout``: a request's line and headers must be complete within this many seconds
  of its first byte (or of the connection opening); a client that trickles them is cut.
- ``idle_timeout``: a connection with no request in progress for this long is closed
  (aiohttp's keep-alive timeout, whose default is an hour).
- ``max_unauthenticated``: connections from one address that have not yet carried a signed-in
  request; one more is closed at once. A connection counts as authenticated once a request on
  it had a principal (``PRINCIPAL``) or a web-target session (``AUTHENTICATED``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway.web.app import CSP
from gateway.web.auth import PRINCIPAL
from gateway.web.problems import problem_response

log = logging.getLogger(__name__)

AUTHENTICATED = web.RequestKey("authenticated", bool)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_DETAILS = {
    400: "the request could not be parsed as HTTP",
    413: "the request is too large",
    431: "the request's headers are too large",
}


@dataclass(frozen=True)
class HttpLimits:
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    max_unauthenticated: int = 64  # per address; 0 = no cap


@dataclass
class ConnectionGuard:
    """The listener's shared state: unauthenticated connections per address."""

    limits: HttpLimits
    unauthenticated: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    # Not capped: a trusted load balancer carries everyone's connections from one address.
    exempt: Callable[[str], bool] = lambda address: False

    def admit(self, address: str) -> bool:
        if self.exempt(address):
            return True
        cap = self.limits.max_unauthenticated
        if cap and self.unauthenticated[address] >= cap:
            self.refused += 1
            return False
        self.unauthenticated[address] += 1
        return True

    def release(self, address: str) -> None:
        if self.exempt(address):
            return
        self.unauthenticated[address] -= 1
        if self.unauthenticated[address] <= 0:
            del self.unauthenticated[address]


class GatewayHandler(RequestHandler):
    """aiohttp's connection handler with the limits above and problem+json parser errors."""

    def __init__(
        self, manager: web.Server, guard: ConnectionGuard, *, counted: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(manager, keepalive_timeout=guard.limits.idle_timeout, **kwargs)
        self._guard = guard
        self._counted = counted  # False: the web fast path counts this connection itself
        self.on_authenticated: Callable[[], None] | None = None
        self._address: str | None = None  # set while counted as unauthenticated
        self._header_timer: asyncio.TimerHandle | None = None
        self._busy = False
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if not self._counted:
            super().connection_made(transport)
            self._arm_header_timer()
            return
        if not self._guard.admit(address):
            log.info("HTTP connection from %s refused: too many unauthenticated", address)
            self._refused = True
            transport.close()
            return
        self._address = address
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self._cancel_header_timer()
        self._authenticated()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._busy and self._header_timer is None:
            self._arm_header_timer()
        super().data_received(data)

    async def _handle_request(
        self, request: BaseRequest, start_time: float | None, request_handler: Any
    ) -> tuple[web.StreamResponse, bool]:
        self._busy = True
        self._cancel_header_timer()
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            self._busy = False
            if isinstance(request, web.Request) and (
                request.get(PRINCIPAL) is not None or request.get(AUTHENTICATED)
            ):
                self._authenticated()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A problem document for a request aiohttp could not parse (or an error outside the
        app); the input is never echoed."""
        if status >= 500:
            log.error("HTTP error outside the app from %s", request.remote, exc_info=exc)
        else:
            log.info("HTTP request from %s refused by the parser (%s)", request.remote, status)
        slug = {413: "payload-too-large", 504: "unavailable"}.get(status)
        if slug is None:
            slug = "internal" if status >= 500 else "bad-request"
        detail = _DETAILS.get(status, "the request could not be handled")
        if isinstance(exc, LineTooLong):
            detail = f"a line of the request is longer than {exc.args[1]} bytes"
        response = problem_response(status, slug, detail)
        response.headers.update(SECURITY_HEADERS)
        response.force_close()
        return response

    def _authenticated(self) -> None:
        if self._address is not None:
            self._guard.release(self._address)
            self._address = None
        callback, self.on_authenticated = self.on_authenticated, None
        if callback is not None:
            callback()

    def _arm_header_timer(self) -> None:
        timeout = self._guard.limits.header_timeout
        if timeout > 0:
            self._header_timer = self._loop.call_later(timeout, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self._busy and not self._messages:
            log.info("HTTP connection cut: no complete request within the header timeout")
            self.force_close()


def aiohttp_handlers(
    server: web.Server, guard: ConnectionGuard, **handler_args: Any
) -> Callable[[], GatewayHandler]:
    """Handlers for connections the web fast path admitted and counts itself (it hands
    them requests it does not serve); their header and idle timeouts still hold."""

    def handler() -> GatewayHandler:
        return GatewayHandler(
            server, guard, counted=False, loop=asyncio.get_running_loop(), **handler_args
        )

    return handler


class GuardedSite(web.BaseSite):
    """A TCP site whose connections are ``GatewayHandler``s sharing one guard."""

    __slots__ = ("_handler_args", "_host", "_port", "_sock", "guard")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        guard: ConnectionGuard,
        sock: socket.socket | None = None,
        **handler_args: Any,
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._sock = sock  # a worker's shared listening socket
        self.guard = guard
        self._handler_args = handler_args

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        args = self._handler_args

        def connection() -> GatewayHandler:
            return GatewayHandler(server, self.guard, loop=loop, **args)

        if self._sock is not None:
            self._server = await loop.create_server(connection, sock=self._sock)
        else:
            self._server = await loop.create_server(connection, self._host, self._port)
