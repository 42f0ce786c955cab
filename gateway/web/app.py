"""The node's HTTP application: health and metrics, the JSON API, the web UI and its files.

Middlewares, outermost first: a request through a trusted load balancer takes the person's
address and scheme from it (``forwarded``); errors become problem+json (API) or plain pages;
the caller is identified (token or cookie) and cookie-borne state changes are CSRF-checked.
Every response carries the security headers: a CSP without inline script, no framing, no
sniffing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.proxies import TrustedProxies
from gateway.web import (  # noqa: F401  (register routes)
    api_access,
    api_admin,
    api_events,
    api_nodes,
    api_provision,
    api_report,
    api_sessions,
    live,
)
from gateway.web.auth import Authenticator, scheme
from gateway.web.deps import DEPS, Deps
from gateway.web.forwarded import forwarded_middleware
from gateway.web.health import Check, Refresh, Warning, add_health_routes
from gateway.web.oidc import add_oidc_routes
from gateway.web.problems import problem_middleware
from gateway.web.routes import MAX_BODY, TABLE
from gateway.web.ui import add_ui_routes

STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# Set on a request whose response is not the gateway's own (a web target's, through the
# proxy): the gateway adds none of its headers to it.
FOREIGN = web.RequestKey("foreign", bool)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.get(FOREIGN):
        return
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    if scheme(request) == "https":
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if not request.path.startswith("/static/"):
        headers.setdefault("Cache-Control", "no-store")


def build_app(
    deps: Deps,
    checks: dict[str, Check],
    refresh: list[Refresh],
    *,
    front: Sequence[Middleware] = (),
    warnings: dict[str, Warning] | None = None,
) -> web.Application:
    """``front`` middlewares run first, outside the gateway's own (the web-target proxy)."""
    auth = Authenticator(deps.services.policy, deps.browser)
    trusted = TrustedProxies(deps.services.config.server.trusted_proxies)
    app = web.Application(
        middlewares=[forwarded_middleware(trusted), *front, problem_middleware, auth.middleware],
        client_max_size=MAX_BODY,
    )
    app[DEPS] = deps
    app.on_response_prepare.append(_security_headers)
    add_health_routes(app, deps.metrics, checks, refresh, warnings)
    TABLE.install(app)
    add_ui_routes(app)
    add_oidc_routes(app)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    return app
