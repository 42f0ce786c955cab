"""Requests through a trusted load balancer: the person's address and scheme.

The first middleware of the web app. A request whose connection comes from one of
``server.trusted_proxies`` goes on with ``remote`` taken from the last hop of its
``X-Forwarded-For`` and ``scheme`` from its ``X-Forwarded-Proto``; every other request keeps
its connection's own (whatever it sent in those headers is ignored), so audit events, the
login throttle and the sign-in cookie's Secure flag see the person, not a spoofed header.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.proxies import TrustedProxies
from gateway.web.problems import Handler


def peer_of(request: web.Request) -> str:
    """The address of the connection itself (aiohttp's ``remote`` before any clone)."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else (request.remote or "")


def forwarded_middleware(trusted: TrustedProxies) -> Middleware:
    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not trusted.networks:
            return await handler(request)
        peer = peer_of(request)
        if not trusted.trusts(peer):
            return await handler(request)
        headers = request.headers
        client = trusted.client(peer, headers.get("X-Forwarded-For", ""))
        proto = trusted.scheme(peer, headers.get("X-Forwarded-Proto", ""), request.scheme)
        # Set on this request itself, as ``clone(remote=, scheme=)`` sets its copy (aiohttp
        # keeps both in the request's cache): a copy would hide what the later middlewares
        # mark on it from the response hooks and the connection handler, which see this one.
        request._cache["remote"] = client
        request._cache["scheme"] = proto
        return await handler(request)

    return forwarded
