"""``[[notifications]]``: the channels notifications go to, and which events each takes.
Parsed from the configuration file's tables by ``gateway.config``.

Secrets are not in the file: a webhook's signing secret and an SMTP password are set with
``lockgate notifications secret NAME`` (into the vault)."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

EVENTS = (
    "request.created",
    "request.approved",
    "request.denied",
    "request.cancelled",
    "request.expired",
    "grant.expiring",
    "grant.revoked",
    "session.killed",
    "breakglass.used",
    "provisioning.cleanup_failed",
)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")
_DEFAULT_EVENTS = ("*",)
_COMMON = {"name", "kind", "events", "rules", "max_attempts"}
_KEYS = {
    "webhook": _COMMON | {"url"},
    "slack": _COMMON | {"url", "channel"},
    "email": _COMMON
    | {"smtp", "starttls", "tls_ca", "username", "sender", "to", "to_approvers", "to_requester"}
    | {"user_address"},
}


@dataclass(frozen=True)
class Channel:
    name: str
    kind: str  # webhook | slack | email
    events: tuple[str, ...] = _DEFAULT_EVENTS  # globs over EVENTS
    rules: tuple[str, ...] = ()  # only events under these rules; () = every rule
    max_attempts: int = 8  # then the notification is a dead letter
    url: str = ""  # webhook, slack ("" for slack: the URL is in the vault)
    channel: str = ""  # slack: override the webhook's channel
    smtp: str = ""  # email: HOST:PORT
    starttls: bool = True
    tls_ca: str = ""  # CA bundle the SMTP server's certificate is checked against; "": system
    username: str = ""  # SMTP login; the password is in the vault
    sender: str = ""
    to: tuple[str, ...] = ()
    to_approvers: bool = False  # users holding an approver role of the request's rule
    to_requester: bool = False
    user_address: str = ""  # a person's address, e.g. "{user}@example.com"

    def wants(self, event: str, rule: str) -> bool:
        if self.rules and rule not in self.rules:
            return False
        return any(fnmatch.fnmatchcase(event, pattern) for pattern in self.events)


def _strings(item: dict[str, Any], key: str) -> tuple[str, ...]:
    value = item.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a list of strings")
    return tuple(value)


def _string(item: dict[str, Any], key: str) -> str:
    value = item.get(key, "")
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def _flag(item: dict[str, Any], key: str, default: bool) -> bool:
    value = item.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false")
    return value


def parse_channel(item: dict[str, Any]) -> Channel:
    """One ``[[notifications]]`` table; raises ValueError naming the bad key."""
    kind = item.get("kind")
    if kind not in _KEYS:
        raise ValueError("kind must be webhook, slack or email")
    unknown = sorted(set(item) - _KEYS[kind])
    if unknown:
        raise ValueError(f"unknown key {unknown[0]} for kind {kind}")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError("name is required: lower-case letters, digits, '.', '_' or '-'")
    events = _strings(item, "events") if "events" in item else _DEFAULT_EVENTS
    for pattern in events:
        if not any(fnmatch.fnmatchcase(e, pattern) for e in EVENTS):
            raise ValueError(f"events: {pattern!r} matches no event; events: {', '.join(EVENTS)}")
    attempts = item.get("max_attempts", 8)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 50:
        raise ValueError("max_attempts must be between 1 and 50")
    common: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "events": events,
        "rules": _strings(item, "rules"),
        "max_attempts": attempts,
    }
    if kind in ("webhook", "slack"):
        url = _string(item, "url")
        # A Slack or Mattermost hook URL is itself the credential: it may live in the vault
        # instead (lockgate notifications secret NAME), with url left out here.
        if not (kind == "slack" and not url) and not url.startswith(("http://", "https://")):
            raise ValueError("url must be an http:// or https:// URL")
        return Channel(**common, url=url, channel=_string(item, "channel"))
    smtp = _string(item, "smtp")
    host, sep, port = smtp.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"smtp: expected HOST:PORT, got {smtp!r}")
    sender = _string(item, "sender")
    to = _strings(item, "to")
    for address in (sender, *to):
        if not _ADDRESS.match(address):
            raise ValueError(f"not a mail address: {address!r}")
    channel = Channel(
        **common,
        smtp=smtp,
        starttls=_flag(item, "starttls", True),
        tls_ca=_string(item, "tls_ca"),
        username=_string(item, "username"),
        sender=sender,
        to=to,
        to_approvers=_flag(item, "to_approvers", False),
        to_requester=_flag(item, "to_requester", False),
        user_address=_string(item, "user_address"),
    )
    if (channel.to_approvers or channel.to_requester) and "{user}" not in channel.user_address:
        raise ValueError('to_approvers and to_requester need user_address, e.g. "{user}@corp"')
    if channel.username and not channel.starttls:
        raise ValueError("a username needs starttls = true: the password never goes in clear")
    if not (channel.to or channel.to_approvers or channel.to_requester):
        raise ValueError("an email channel needs to, to_approvers or to_requester")
    return channel
