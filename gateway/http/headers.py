"""The headers that cross the proxy, each way.

Upstream, the person's request loses everything that is the gateway's or the connection's:

- ``Authorization`` and ``Proxy-Authorization`` (the credential is the gateway's to send),
  the gateway's cookies (only those: ``lockgate*``, ``__Host-lockgate*``,
  ``__Secure-lockgate*``; the app's own cookies pass), every ``X-Lockgate-*`` header (so a
  forged ``X-Lockgate-Assertion`` never reaches the app);
- hop-by-hop headers: ``Connection`` and every name it lists, ``Keep-Alive``, ``TE``,
  ``Trailer``, ``Transfer-Encoding``, ``Upgrade``, ``Proxy-*``; and ``Expect`` (the
  gateway answered it);
- what the client may claim about itself: ``Forwarded``, ``X-Forwarded-*``, ``X-Real-IP``.

Then the gateway adds its own view (``X-Forwarded-For/-Proto/-Host``), the upstream's
``Host`` (or the person's, when the target preserves it), the vaulted credential header and
the identity assertion. ``Origin`` and ``Referer`` naming the target's public origin are
mapped to the upstream's, as ``Host`` is, so the app's same-origin checks keep working; any
other origin passes unchanged for the app to judge.

Downstream, hop-by-hop headers go, ``Location``/``Content-Location`` pointing at the upstream
(its origin and base path) are mapped to the target's public origin and prefix, and
``Set-Cookie`` loses ``Domain`` (cookies stay host-only on the target's origin), gets its
``Path`` mapped (prefixed in path mode) and never sets a cookie named like the gateway's.
In path-prefix mode, where the app shares the gateway's origin, headers with origin-wide
effect (``Strict-Transport-Security``, ``Clear-Site-Data``, ``Service-Worker-Allowed``) are
dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from multidict import CIMultiDict, MultiMapping
from yarl import URL

from gateway.http.target import DEFAULT_PORTS, WebTarget
from vault.secret import Secret

ASSERTION_HEADER = "X-Lockgate-Assertion"
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding"}
)
_REQUEST_DROPPED = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "forwarded",
        "x-real-ip",
        "expect",
        "host",
        "upgrade",
        "cookie",  # rebuilt without the gateway's cookies
    }
)
_WEBSOCKET_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
_RESPONSE_DROPPED = frozenset({"content-length", "upgrade", "alt-svc"})
_PATH_MODE_DROPPED = frozenset(
    {"strict-transport-security", "clear-site-data", "service-worker-allowed"}
)
_GATEWAY_COOKIE_PREFIXES = ("lockgate", "__host-lockgate", "__secure-lockgate")


def is_gateway_cookie(name: str) -> bool:
    return name.strip().lower().startswith(_GATEWAY_COOKIE_PREFIXES)


def _connection_tokens(headers: MultiMapping[str]) -> set[str]:
    tokens: set[str] = set()
    for value in headers.getall("Connection", []):
        tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def _hop(name: str, listed: set[str]) -> bool:
    return name in HOP_BY_HOP or name in listed or name.startswith("proxy-")


def app_cookies(values: Iterable[str]) -> str | None:
    """The ``Cookie`` header for the upstream: every pair except the gateway's."""
    kept = []
    for value in values:
        for pair in value.split(";"):
            pair = pair.strip()
            if pair and not is_gateway_cookie(pair.partition("=")[0]):
                kept.append(pair)
    return "; ".join(kept) or None


@dataclass(slots=True)  # made per request; not frozen, which costs 4x to make
class ClientView:
    """The gateway's own view of a request: who sent it, over what, to which host, and the
    target's public origin and path prefix that the browser uses."""

    client_ip: str
    proto: str  # http | https
    host: str  # the Host header the browser sent
    public_origin: str  # https://grafana.gw.example.com (or the gateway's, in path mode)
    prefix: str = ""  # /t/<target> in path mode
    gateway_origin: str = ""  # where the gateway's own pages are (for links back)


def request_headers(
    incoming: MultiMapping[str],
    target: WebTarget,
    view: ClientView,
    *,
    credential_header: str | None = None,
    credential: Secret | None = None,
    assertion: str | None = None,
    websocket: bool = False,
) -> CIMultiDict[str]:
    """The headers sent upstream for one request (see the module docstring)."""
    listed = _connection_tokens(incoming)
    out: CIMultiDict[str] = CIMultiDict()
    cookies: list[str] = []
    injected = credential_header.lower() if credential_header else None
    for name, value in incoming.items():
        key = name.lower()
        if key == "cookie":
            cookies.append(value)
            continue
        if (
            key in _REQUEST_DROPPED
            or _hop(key, listed)
            or key.startswith(("x-forwarded-", "x-lockgate-"))
            or key == injected
            or (websocket and key in _WEBSOCKET_HANDSHAKE)
        ):
            continue
        if key == "origin":
            value = _upstream_origin(value, target, view)
        elif key == "referer":
            value = _upstream_referer(value, target, view)
        out.add(name, value)
    cookie = app_cookies(cookies)
    if cookie is not None:
        out["Cookie"] = cookie
    out["Host"] = view.host if target.preserve_host else target.host_header
    out["X-Forwarded-For"] = view.client_ip
    out["X-Forwarded-Proto"] = view.proto
    out["X-Forwarded-Host"] = view.host
    if view.prefix:
        out["X-Forwarded-Prefix"] = view.prefix
    if credential_header and credential is not None:
        out[credential_header] = credential.reveal_text()
    if assertion:
        out[ASSERTION_HEADER] = assertion
    return out


def _upstream_origin(value: str, target: WebTarget, view: ClientView) -> str:
    if target.preserve_host or value.strip().lower() != view.public_origin.lower():
        return value
    return target.origin


def _upstream_referer(value: str, target: WebTarget, view: ClientView) -> str:
    base = view.public_origin + view.prefix
    if target.preserve_host or not (value == base or value.startswith(base + "/")):
        return value
    rest = value[len(base) :] or "/"
    return target.origin + target.upstream_path(rest)


class ResponseRewriter:
    """Maps an upstream response's headers onto the target's public origin."""

    def __init__(self, target: WebTarget, view: ClientView) -> None:
        self.target = target
        self.view = view
        self.path_mode = bool(view.prefix)
        self.secure = view.proto == "https"

    def headers(self, upstream: MultiMapping[str]) -> CIMultiDict[str]:
        listed = _connection_tokens(upstream)
        out: CIMultiDict[str] = CIMultiDict()
        for name, value in upstream.items():
            key = name.lower()
            if (
                _hop(key, listed)
                or key in _RESPONSE_DROPPED
                or key.startswith("x-lockgate-")
                or (self.path_mode and key in _PATH_MODE_DROPPED)
            ):
                continue
            if key in ("location", "content-location"):
                value = self.location(value)
            elif key == "set-cookie":
                rewritten = self.set_cookie(value)
                if rewritten is None:
                    continue
                value = rewritten
            out.add(name, value)
        return out

    def _public_path(self, path: str) -> str:
        mapped = self.target.public_path(path)
        mapped = path if mapped is None else mapped
        if self.path_mode and not (
            mapped == self.view.prefix or mapped.startswith(self.view.prefix + "/")
        ):
            mapped = self.view.prefix + mapped
        return mapped

    def _is_upstream(self, url: URL) -> bool:
        scheme = (url.scheme or "").lower()
        if scheme not in DEFAULT_PORTS or url.raw_host is None:
            return False
        port = url.explicit_port or DEFAULT_PORTS[scheme]
        host = url.raw_host.lower()
        t = self.target
        if scheme == t.scheme and host == t.host.lower() and port == t.port:
            return True
        public = URL(self.view.public_origin)
        return (
            t.preserve_host
            and host == (public.raw_host or "").lower()
            and port == (public.explicit_port or DEFAULT_PORTS.get(public.scheme, 0))
        )

    def location(self, value: str) -> str:
        """``Location`` at the upstream (absolute, or an absolute path under the base path)
        mapped to the public origin and prefix; other values unchanged."""
        text = value.strip()
        if text.startswith("//"):
            text = f"{self.target.scheme}:{text}"
        try:
            url = URL(text, encoded=True)
        except (TypeError, ValueError):
            return value
        if url.is_absolute():
            if not self._is_upstream(url):
                return value
        elif not text.startswith("/"):
            return value  # a relative reference resolves correctly on its own
        rest = url.raw_path or "/"
        mapped = self._public_path(rest)
        tail = (f"?{url.raw_query_string}" if url.raw_query_string else "") + (
            f"#{url.raw_fragment}" if url.raw_fragment else ""
        )
        if url.is_absolute():
            return self.view.public_origin + mapped + tail
        return mapped + tail

    def set_cookie(self, value: str) -> str | None:
        """The cookie with ``Domain`` removed and ``Path`` mapped; None to drop it (a
        gateway cookie name)."""
        first, *attrs = value.split(";")
        name = first.partition("=")[0].strip()
        if not name or is_gateway_cookie(name):
            return None
        kept = [first.strip()]
        has_path = False
        for attr in attrs:
            key, _, attr_value = attr.strip().partition("=")
            lowered = key.strip().lower()
            if lowered == "domain" or (lowered == "secure" and not self.secure):
                continue
            if lowered == "path":
                has_path = True
                path = attr_value.strip() or "/"
                kept.append(f"Path={self._public_path(path) if path.startswith('/') else '/'}")
                continue
            if attr.strip():
                kept.append(attr.strip())
        if self.path_mode and not has_path:
            kept.append(f"Path={self.view.prefix}/")
        return "; ".join(kept)


def websocket_protocols(incoming: MultiMapping[str]) -> tuple[str, ...]:
    """The subprotocols the client offers, in its order."""
    values = incoming.getall("Sec-WebSocket-Protocol", [])
    return tuple(p.strip() for v in values for p in v.split(",") if p.strip())
