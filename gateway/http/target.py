"""A web target as the proxy sees it: where its upstream is and how to reach it.

``web_target`` reads a ``policy.models.Target`` of kind ``http`` once and validates its base
URL: ``http`` or ``https`` only, no user name or password in the URL (credentials live in the
vault), no query or fragment. A base path (``http://10.0.0.7:3000/grafana/``) is kept without
its trailing slash; the target's root ``/`` is the upstream's ``/grafana/``.

TLS settings (set by ``lockgate target add --tls-ca FILE | --tls-fingerprint SHA256 |
--tls-insecure``): verify against the system store by default, against ``tls_ca`` (PEM text)
when given, or pin the upstream certificate by the SHA-256 of its DER encoding
(``tls_fingerprint``: hex, colons allowed). ``tls_verify = False`` turns verification off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from yarl import URL

from policy.models import Target

_HEX64 = re.compile(r"[0-9a-f]{64}")
DEFAULT_PORTS = {"http": 80, "https": 443}


class TargetUnusable(ValueError):
    """The target's settings cannot be used to reach it. The message names the setting."""


@dataclass(frozen=True)
class WebTarget:
    name: str
    scheme: str  # http | https
    host: str  # as in the URL; IPv6 without brackets
    port: int
    base_path: str  # "" or "/grafana" (no trailing slash), still percent-encoded
    tls_verify: bool = True
    tls_ca: str | None = None  # PEM bundle
    tls_fingerprint: str | None = None  # 64 lowercase hex digits
    preserve_host: bool = False
    sensitive_params: tuple[str, ...] = ()
    record_bodies: int = 0  # bytes of non-GET request bodies to record; 0 = none

    @property
    def host_header(self) -> str:
        """The upstream's own ``Host``: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == DEFAULT_PORTS[self.scheme]:
            return host
        return f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host_header}"

    def upstream_path(self, path: str) -> str:
        """The upstream path for ``path`` (percent-encoded, starting with ``/``) on the
        target's root: the base path prepended."""
        return self.base_path + path

    def public_path(self, upstream_path: str) -> str | None:
        """The inverse: the path on the target's root for an upstream path, or None when
        it lies outside the base path."""
        base = self.base_path
        if not base:
            return upstream_path
        if upstream_path == base:
            return "/"
        if upstream_path.startswith(base + "/"):
            return upstream_path[len(base) :]
        return None

    def url(self, path: str, query: str) -> URL:
        """The upstream URL, built from already-encoded parts (nothing is re-quoted, so the
        upstream receives exactly the path that was checked)."""
        return URL.build(
            scheme=self.scheme,
            host=self.host,
            port=self.port,
            path=self.upstream_path(path),
            query_string=query,
            encoded=True,
        )


def normalize_fingerprint(value: str) -> str:
    """``AB:CD:...`` or ``abcd...`` to 64 lowercase hex digits; raises TargetUnusable."""
    text = value.strip().lower().replace(":", "")
    if text.startswith("sha256/") or text.startswith("sha256:"):
        text = text[7:]
    if not _HEX64.fullmatch(text):
        raise TargetUnusable("tls_fingerprint must be the SHA-256 of the certificate (64 hex)")
    return text


def parse_base_url(name: str, url: str, **settings: Any) -> WebTarget:
    """Validate ``url`` and build the WebTarget; raises TargetUnusable."""
    try:
        parsed = URL(url)
    except (TypeError, ValueError):
        raise TargetUnusable(f"target {name}: the URL does not parse") from None
    scheme = parsed.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise TargetUnusable(f"target {name}: the URL must be http:// or https://")
    if not parsed.host:
        raise TargetUnusable(f"target {name}: the URL has no host")
    if parsed.raw_user or parsed.raw_password:
        raise TargetUnusable(
            f"target {name}: no user or password in the URL; set a credential instead"
        )
    if parsed.raw_query_string or parsed.raw_fragment:
        raise TargetUnusable(f"target {name}: the URL must not have a query or fragment")
    port = parsed.explicit_port or DEFAULT_PORTS[scheme]
    fingerprint = settings.pop("tls_fingerprint", None)
    return WebTarget(
        name=name,
        scheme=scheme,
        host=parsed.raw_host or parsed.host,
        port=port,
        base_path=parsed.raw_path.rstrip("/"),
        tls_fingerprint=normalize_fingerprint(fingerprint) if fingerprint else None,
        **settings,
    )


def web_target(target: Target) -> WebTarget:
    """The proxy's view of a ``policy.models.Target`` of kind ``http``; raises
    TargetUnusable for any other target or a URL that cannot be used."""
    if target.kind != "http" or not target.url:
        raise TargetUnusable(f"{target.name} is not a web target")
    return parse_base_url(
        target.name,
        target.url,
        tls_verify=target.tls_verify,
        tls_ca=target.tls_ca or None,
        tls_fingerprint=target.tls_fingerprint or None,
        preserve_host=target.preserve_host,
        sensitive_params=tuple(target.sensitive_params),
        record_bodies=max(0, target.record_bodies),
    )
