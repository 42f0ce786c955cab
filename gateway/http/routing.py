"""Which web target a request is for, and the path it asks of it.

Two addressing modes, decided by ``server.web_domain``:

- **Per-target origin** (``web_domain`` set): ``<target>.<web_domain>`` is the target's own
  origin; the Host header decides (case-insensitive, port ignored). Any other host, and the
  bare ``web_domain`` itself, is the gateway's own site; links back to the gateway (sign-in,
  the request form, the hand-off) go to the bare ``web_domain`` on the same port, so set
  ``web_domain`` to the gateway's own host name (``gw.example.com``, targets at
  ``grafana.gw.example.com``): sign-in and targets are then one site, which the hand-off
  needs (the gateway's SameSite=Strict cookie is sent on same-site redirects only). A DNS
  label holds only letters, digits and ``-`` (at most 63, not starting or ending with ``-``)
  and is case-insensitive, so in this mode a target is reachable only if its name is a
  lower-case label: ``grafana`` and ``kibana-prod`` work; ``Grafana``, ``db_01`` and ``a.b``
  (names the policy allows) do not — name such targets differently, or use path prefixes.
- **Path prefix** (``web_domain`` empty, the fallback without wildcard DNS):
  ``/t/<target>/...`` on the gateway's own origin; every valid target name works. The app
  then shares the gateway's origin: its scripts can read the gateway's pages and act as the
  person signed in to them, absolute links (``/static/app.js``) leave the prefix, and its
  cookies are confined by path only. Use it for apps you trust; prefer per-target origins.

Paths are checked once here and then sent upstream exactly as received (never re-encoded),
so what the rules saw is what the upstream gets. Refused as ambiguous (400): anything but an
origin-form path, dot segments (``..``, ``%2e%2e``, ``..;`` as Tomcat and Jetty read it), a
backslash (raw or ``%5c``, a separator to some servers) and ``%00``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
PATH_PREFIX = "/t/"
CONTROL = "/__lockgate/"  # the hand-off endpoints on a target's origin


class BadPath(ValueError):
    """The request target is ambiguous or not a path; answered with 400."""


@dataclass(slots=True)  # made per request; not frozen, which costs 4x to make
class Route:
    """A request for ``target``. ``path`` is on the target's root (percent-encoded, starts
    with ``/``; empty when a path-prefix URL lacks the slash after the name), ``query`` the raw
    query string, ``prefix`` ``""`` (own origin) or ``/t/<target>`` (path prefix)."""

    target: str
    mode: Literal["host", "path"]
    path: str
    query: str
    prefix: str

    @property
    def is_control(self) -> bool:
        return self.path.startswith(CONTROL)

    @property
    def public_path(self) -> str:
        """The path as the browser sees it (prefix included)."""
        return self.prefix + self.path


def split_host(host: str) -> str:
    """The host name of a Host header, lower-cased, without port or trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.rstrip(".")


def check_path(raw_path: str) -> tuple[str, str]:
    """(path, query) of an origin-form request target; raises BadPath. The path stays
    percent-encoded."""
    if not raw_path.startswith("/"):
        raise BadPath("the request target must be a path")
    path, _, query = raw_path.partition("?")
    path = path.partition("#")[0]
    lowered = path.lower()
    if "\\" in path or "%5c" in lowered:
        raise BadPath("backslashes are not allowed in paths")
    if "%00" in lowered:
        raise BadPath("NUL is not allowed in paths")
    for segment in path.split("/"):
        if "." in segment or "%2e" in segment.lower():
            plain = unquote(segment).split(";", 1)[0]
            if plain in (".", ".."):
                raise BadPath("dot segments are not allowed in paths")
    return path, query


def decoded_path(path: str) -> str:
    """The path as an app reads it, for rules (``http_paths`` globs) and anomaly patterns."""
    return unquote(path, errors="replace")


class Router:
    def __init__(self, web_domain: str) -> None:
        self.web_domain = web_domain.strip().strip(".").lower()

    @property
    def mode(self) -> Literal["host", "path"]:
        return "host" if self.web_domain else "path"

    def target_of_host(self, host: str) -> str | None:
        """The target label of a Host header in per-target-origin mode."""
        if not self.web_domain:
            return None
        name = split_host(host)
        suffix = "." + self.web_domain
        if not name.endswith(suffix):
            return None
        label = name[: -len(suffix)]
        return label if DNS_LABEL.fullmatch(label) else None

    def route(self, host: str, raw_path: str) -> Route | None:
        """The route of a request, or None for the gateway's own pages. Raises BadPath for
        a request to a target whose path is ambiguous."""
        if self.web_domain:
            target = self.target_of_host(host)
            if target is None:
                return None
            path, query = check_path(raw_path)
            return Route(target, "host", path, query, "")
        if not raw_path.startswith(PATH_PREFIX):
            return None
        rest = raw_path[len(PATH_PREFIX) :]
        end = len(rest)
        for stop in "/?":
            found = rest.find(stop)
            if found != -1:
                end = min(end, found)
        name, tail = rest[:end], rest[end:]
        if not TARGET_NAME.fullmatch(name):
            return None
        prefix = PATH_PREFIX + name
        if tail.startswith("/"):
            path, query = check_path(tail)
        else:
            path, query = "", tail[1:] if tail.startswith("?") else ""
        return Route(name, "path", path, query, prefix)

    def target_origin(self, target: str, scheme: str, gateway_host: str) -> str:
        """The public origin of ``target`` as seen from a request to the gateway's own site
        at ``gateway_host`` (its port is kept): ``https://grafana.gw.example.com:8443``, or
        the gateway's own origin in path-prefix mode."""
        if not self.web_domain:
            return f"{scheme}://{gateway_host}"
        port = _port_of(gateway_host)
        return f"{scheme}://{target}.{self.web_domain}{port}"

    def gateway_origin(self, scheme: str, request_host: str) -> str:
        """The gateway's own origin as seen from a request to any of its hosts: the bare
        ``web_domain`` (with the request's port) in per-target-origin mode, so the gateway's
        sign-in and the targets are one site; the request's own origin in path mode."""
        if not self.web_domain:
            return f"{scheme}://{request_host}"
        return f"{scheme}://{self.web_domain}{_port_of(request_host)}"

    def target_base(self, target: str, scheme: str, gateway_host: str) -> str:
        """The URL of the target's root: its origin plus the path prefix, with a slash."""
        prefix = "" if self.web_domain else PATH_PREFIX + target
        return self.target_origin(target, scheme, gateway_host) + prefix + "/"

    def reachable(self, target: str) -> bool:
        """Whether a target of that name can be addressed in the current mode."""
        if self.web_domain:
            return bool(DNS_LABEL.fullmatch(target))
        return bool(TARGET_NAME.fullmatch(target))


def _port_of(host: str) -> str:
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1 :]
        return rest if rest.startswith(":") else ""
    if host.count(":") == 1:
        return ":" + host.rsplit(":", 1)[1]
    return ""
