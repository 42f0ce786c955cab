"""``[[auth.oidc]]``: one identity provider, and its claims-to-roles mapping (pure).

A mapping key is matched against every value of the provider's ``groups_claim``:
``"sec-approvers"`` exactly, ``"sre-*"`` as a glob (``*``, ``?``, ``[...]``) and ``"/^ops-(a|b)$/"``
(between slashes) as a regular expression that must match the whole value. The roles a
provider *manages* are every role any of its mappings names: at each sign-in and check, a
managed role the claims no longer grant is removed; roles given by hand and not named by any
mapping are left alone.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from policy.durations import parse_duration

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_ROLE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_KEYS = {
    "name",
    "issuer",
    "client_id",
    "scopes",
    "username_claim",
    "groups_claim",
    "role_mappings",
    "auto_create",
    "link_existing",
    "require_email_verified",
    "clock_skew",
    "check_interval",
    "label",
}
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


@dataclass(frozen=True)
class RoleMapping:
    pattern: str
    kind: Literal["exact", "glob", "regex"]
    roles: tuple[str, ...]

    def matches(self, value: str) -> bool:
        if self.kind == "exact":
            return value == self.pattern
        if self.kind == "glob":
            return fnmatch.fnmatchcase(value, self.pattern)
        return re.fullmatch(self.pattern, value) is not None


@dataclass(frozen=True)
class OidcProvider:
    name: str
    issuer: str
    client_id: str
    scopes: tuple[str, ...] = ("openid", "profile", "email", "groups")
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    role_mappings: tuple[RoleMapping, ...] = ()
    auto_create: bool = False
    link_existing: bool = False  # link a local user of the same name on first sign-in
    require_email_verified: bool = True
    clock_skew: timedelta = timedelta(seconds=60)
    check_interval: timedelta = timedelta(seconds=30)
    label: str = ""

    @property
    def button(self) -> str:
        return self.label or f"Sign in with {self.name}"

    @property
    def managed_roles(self) -> frozenset[str]:
        return frozenset(r for m in self.role_mappings for r in m.roles)

    def groups(self, claims: Mapping[str, Any]) -> list[str]:
        """The values of the groups claim: a string or a list of strings (others ignored)."""
        value = claims.get(self.groups_claim)
        if isinstance(value, str):
            return [value]
        if isinstance(value, list):
            return [v for v in value if isinstance(v, str)]
        return []

    def roles_for(self, claims: Mapping[str, Any]) -> frozenset[str]:
        """The roles ``claims`` grant through the mappings."""
        values = self.groups(claims)
        return frozenset(
            role
            for m in self.role_mappings
            if any(m.matches(v) for v in values)
            for role in m.roles
        )


def apply_roles(
    current: Iterable[str], managed: frozenset[str], granted: frozenset[str]
) -> set[str]:
    """The user's roles after a sign-in: hand-given roles kept, managed ones as granted."""
    return {r for r in current if r not in managed} | set(granted)


def _mapping(pattern: object, roles: object) -> RoleMapping:
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("role_mappings keys must be non-empty strings")
    if isinstance(roles, str):
        roles = [roles]
    if not isinstance(roles, list) or not all(isinstance(r, str) and _ROLE.match(r) for r in roles):
        raise ValueError(f"role_mappings {pattern!r}: expected a list of role names")
    kind: Literal["exact", "glob", "regex"] = "exact"
    if len(pattern) > 2 and pattern.startswith("/") and pattern.endswith("/"):
        kind, pattern = "regex", pattern[1:-1]
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(
                f"role_mappings /{pattern}/: not a regular expression: {exc}"
            ) from None
    elif any(c in pattern for c in "*?["):
        kind = "glob"
    return RoleMapping(pattern, kind, tuple(dict.fromkeys(roles)))


def _duration(table: Mapping[str, Any], key: str, default: timedelta) -> timedelta:
    value = table.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ValueError(f'{key} must be a duration such as "30s"')
    return parse_duration(value)


def _text(table: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a non-empty string")
    return value


def _flag(table: Mapping[str, Any], key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false")
    return value


def parse_provider(table: Mapping[str, Any]) -> OidcProvider:
    """One ``[[auth.oidc]]`` table; ValueError names the key at fault."""
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]}")
    name = _text(table, "name")
    if not _NAME.match(name):
        raise ValueError("name: use a-z, 0-9, '_' and '-' (it is part of the callback URL)")
    issuer = _text(table, "issuer").rstrip("/")
    parts = urlsplit(issuer)
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in LOOPBACK):
        raise ValueError("issuer must be an https:// URL (http only on loopback)")
    if parts.query or parts.fragment:
        raise ValueError("issuer must have no query or fragment")
    scopes = table.get("scopes", ["openid", "profile", "email", "groups"])
    if not isinstance(scopes, list) or not all(isinstance(s, str) and s for s in scopes):
        raise ValueError("scopes must be a list of strings")
    if "openid" not in scopes:
        scopes = ["openid", *scopes]
    mappings = table.get("role_mappings", {})
    if not isinstance(mappings, dict):
        raise ValueError('role_mappings must be a table such as { "sre-*" = ["dev"] }')
    check = _duration(table, "check_interval", timedelta(seconds=30))
    if check < timedelta(seconds=5):
        raise ValueError("check_interval must be at least 5s")
    return OidcProvider(
        name=name,
        issuer=issuer,
        client_id=_text(table, "client_id"),
        scopes=tuple(dict.fromkeys(scopes)),
        username_claim=_text(table, "username_claim", "preferred_username"),
        groups_claim=_text(table, "groups_claim", "groups"),
        role_mappings=tuple(_mapping(k, v) for k, v in mappings.items()),
        auto_create=_flag(table, "auto_create", False),
        link_existing=_flag(table, "link_existing", False),
        require_email_verified=_flag(table, "require_email_verified", True),
        clock_skew=_duration(table, "clock_skew", timedelta(seconds=60)),
        check_interval=check,
        label=str(table.get("label", "")),
    )
