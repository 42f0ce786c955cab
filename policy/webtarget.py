"""Validation of a web (``kind="http"``) target's settings: base URL and upstream TLS.

Each function takes what an admin typed and returns the canonical value or raises
InvalidInput naming the setting. They are pure, so the service, CLI and API share them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from policy.errors import InvalidInput

MAX_RECORD_BODIES = 1024 * 1024
MAX_TLS_CA = 1024 * 1024  # characters of PEM
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,252}))$")
_PARAM = re.compile(r"^[A-Za-z0-9_.\[\]-]{1,100}$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


def validate_url(url: str) -> str:
    """An ``http``/``https`` base URL with a host, optional port and base path; userinfo
    (a credential in the URL would be stored and shown in clear), a query and a fragment are
    refused. Returns the URL unchanged."""
    if not url or len(url) > 2048 or not all("!" <= ch <= "~" for ch in url):
        raise InvalidInput("the web target URL must be a printable http:// or https:// URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidInput("the web target URL has an invalid port or host") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput("a web target needs an http:// or https:// --url with a host")
    if "@" in parts.netloc:
        raise InvalidInput("the web target URL must not carry a user name or password")
    if parts.fragment or "#" in url or parts.query or "?" in url:
        raise InvalidInput("the web target URL must not have a query or a fragment")
    host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
    if not _HOST.match(host) or port == 0:
        raise InvalidInput("the web target URL has an invalid host or port")
    if parts.path and not parts.path.startswith("/"):
        raise InvalidInput("the web target URL's path must start with '/'")
    return url


def validate_tls_ca(pem: str) -> str:
    """A PEM bundle of one or more X.509 certificates, trusted for this upstream instead of
    the system store."""
    from cryptography.x509 import load_pem_x509_certificates

    if not pem.strip() or len(pem) > MAX_TLS_CA:
        raise InvalidInput("the TLS CA bundle is empty or too large")
    try:
        load_pem_x509_certificates(pem.encode())
    except ValueError:
        raise InvalidInput("the TLS CA bundle is not PEM X.509 certificates") from None
    return pem.strip() + "\n"


def normalize_fingerprint(value: str) -> str:
    """A SHA-256 certificate fingerprint as 64 lower-case hex digits (colons, spaces and a
    ``sha256:`` prefix are dropped)."""
    text = value.strip().lower().removeprefix("sha256:").replace(":", "").replace(" ", "")
    if not _FINGERPRINT.match(text):
        raise InvalidInput("the TLS fingerprint must be a SHA-256 digest in hex (64 digits)")
    return text


def validate_params(names: Sequence[str]) -> tuple[str, ...]:
    """Query parameter names to mask in recordings, de-duplicated in order."""
    for name in names:
        if not isinstance(name, str) or not _PARAM.match(name):
            raise InvalidInput(f"invalid sensitive parameter name {name!r}")
    return tuple(dict.fromkeys(names))


def validate_record_bodies(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_RECORD_BODIES:
        raise InvalidInput(f"record_bodies must be between 0 and {MAX_RECORD_BODIES} bytes")
    return size


@dataclass(frozen=True)
class WebSettings:
    """A web target's validated settings, as stored."""

    url: str
    tls_verify: bool
    tls_ca: str | None
    tls_fingerprint: str | None
    preserve_host: bool
    sensitive_params: tuple[str, ...]
    record_bodies: int


def web_settings(
    url: str,
    *,
    tls_verify: bool = True,
    tls_ca: str | None = None,
    tls_fingerprint: str | None = None,
    preserve_host: bool = False,
    sensitive_params: Sequence[str] = (),
    record_bodies: int = 0,
) -> WebSettings:
    """Validate every setting together: at most one of a CA bundle, a pinned fingerprint or
    no verification (``tls_verify=False``), and TLS settings only on an ``https`` URL."""
    url = validate_url(url)
    ca = validate_tls_ca(tls_ca) if tls_ca else None
    fingerprint = normalize_fingerprint(tls_fingerprint) if tls_fingerprint else None
    if sum((ca is not None, fingerprint is not None, not tls_verify)) > 1:
        raise InvalidInput("give at most one of a TLS CA, a TLS fingerprint or TLS insecure")
    if (ca or fingerprint or not tls_verify) and not url.lower().startswith("https:"):
        raise InvalidInput("TLS settings need an https:// URL")
    return WebSettings(
        url=url,
        tls_verify=bool(tls_verify),
        tls_ca=ca,
        tls_fingerprint=fingerprint,
        preserve_host=bool(preserve_host),
        sensitive_params=validate_params(sensitive_params),
        record_bodies=validate_record_bodies(record_bodies),
    )
