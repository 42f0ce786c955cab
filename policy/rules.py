"""Rules: parsing them from configuration, and the pure session decision.

``evaluate_session`` is the security decision every edge relies on. It takes values and
``now`` and returns a Decision; it performs no I/O, so every refusal path tests without a
database or a socket.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from policy.durations import format_duration, parse_duration
from policy.errors import AccessDenied, InvalidInput, Refused
from policy.forwarding import parse_entry
from policy.httppath import is_method_token, normalize_http_path
from policy.models import CHANNEL_KINDS, Decision, Grant, Lock, Rule, Target, User
from policy.provisioning import parse_groups, parse_sudo

MAX_TEXT = 500  # characters of a reason, ticket or comment
_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_RULE_KEYS = {
    "name",
    "roles",
    "targets",
    "labels",
    "accounts",
    "max_duration",
    "default_duration",
    "approvals",
    "approver_roles",
    "require_reason",
    "ticket_pattern",
    "channels",
    "mfa_per_session",
    "idp_mfa",
    "hours",
    "break_glass",
    "http_methods",
    "http_paths",
    "groups",
    "sudo",
    "provision_at",
    "forward_to",
}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Hours:
    days: frozenset[int]  # 0 = Monday
    start: time
    end: time
    zone: ZoneInfo

    def contains(self, now: datetime) -> bool:
        local = now.astimezone(self.zone)
        if local.weekday() not in self.days:
            return False
        moment = local.time().replace(tzinfo=None)
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end  # spans midnight


def parse_hours(text: str) -> Hours | None:
    """``"Mon-Fri 08:00-20:00 Europe/Paris"``; days may be a range or a comma list; the zone
    defaults to UTC. Empty text means any time (None)."""
    if not text.strip():
        return None
    parts = text.split()
    if len(parts) not in (2, 3):
        raise InvalidInput(f"hours {text!r}: expected 'Mon-Fri 08:00-20:00 [Zone/Name]'")
    days: set[int] = set()
    for chunk in parts[0].lower().split(","):
        first, _, last = chunk.partition("-")
        if first not in _DAYS or (last and last not in _DAYS):
            raise InvalidInput(f"hours {text!r}: unknown day in {chunk!r}")
        a, b = _DAYS.index(first), _DAYS.index(last or first)
        days.update(range(a, b + 1) if a <= b else [*range(a, 7), *range(0, b + 1)])
    match = re.fullmatch(r"(\d{2}):(\d{2})-(\d{2}):(\d{2})", parts[1])
    if not match:
        raise InvalidInput(f"hours {text!r}: times must read HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
        raise InvalidInput(f"hours {text!r}: no such time of day")
    end = time(23, 59, 59, 999999) if h2 == 24 else time(h2, m2)
    try:
        zone = ZoneInfo(parts[2] if len(parts) == 3 else "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"hours {text!r}: unknown time zone") from None
    return Hours(frozenset(days), time(h1, m1), end, zone)


def _strings(raw: Mapping[str, Any], key: str, default: Sequence[str]) -> tuple[str, ...]:
    value = raw.get(key, list(default))
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidInput(f"{key} must be a list of non-empty strings")
    return tuple(value)


def _typed(raw: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = raw.get(key, default)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidInput(f"{key} must be a {kind.__name__}")
    return value


def parse_rule(raw: Mapping[str, Any]) -> Rule:
    """Validate one ``[[rules]]`` table; unknown keys and bad values name the key."""
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise InvalidInput(f"unknown key {unknown[0]}")
    name = _typed(raw, "name", str, "")
    if not NAME.match(name):
        raise InvalidInput("name must be 1-64 letters, digits, '.', '_' or '-'")
    roles = _strings(raw, "roles", ())
    if not roles:
        raise InvalidInput("roles must name at least one role")
    labels = raw.get("labels", {})
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise InvalidInput("labels must be a table of strings")
    max_duration = parse_duration(_typed(raw, "max_duration", str, "4h"))
    default_duration = parse_duration(_typed(raw, "default_duration", str, "1h"))
    if "default_duration" not in raw:
        default_duration = min(default_duration, max_duration)
    elif default_duration > max_duration:
        raise InvalidInput("default_duration must not exceed max_duration")
    approvals = _typed(raw, "approvals", int, 1)
    if not 0 <= approvals <= 10:
        raise InvalidInput("approvals must be between 0 and 10")
    approver_roles = _strings(raw, "approver_roles", ())
    ticket_pattern = _typed(raw, "ticket_pattern", str, "")
    try:
        re.compile(ticket_pattern)
    except re.error as exc:
        raise InvalidInput(f"ticket_pattern does not compile: {exc}") from None
    channels = _strings(raw, "channels", ("shell", "exec", "sftp"))
    bad = sorted(set(channels) - CHANNEL_KINDS)
    if bad:
        raise InvalidInput(f"channels: unknown kind {bad[0]!r}")
    hours = _typed(raw, "hours", str, "")
    parse_hours(hours)
    http_methods = tuple(m.upper() for m in _strings(raw, "http_methods", ("*",)))
    for method in http_methods:
        if not is_method_token(method.replace("?", "*").replace("[", "*").replace("]", "*")):
            raise InvalidInput(f"http_methods: {method!r} is not an HTTP method or glob")
    http_paths = _strings(raw, "http_paths", ("/*",))
    for glob in http_paths:
        if not glob.startswith("/") or not all("!" <= ch <= "~" for ch in glob):
            raise InvalidInput(f"http_paths: {glob!r} must be a glob starting with '/'")
    forward_to = _strings(raw, "forward_to", ())
    for entry in forward_to:
        parse_entry(entry)
    return Rule(
        name=name,
        roles=frozenset(roles),
        targets=_strings(raw, "targets", ("*",)),
        labels=dict(labels),
        accounts=_strings(raw, "accounts", ("*",)),
        max_duration=max_duration,
        default_duration=default_duration,
        approvals=approvals,
        approver_roles=frozenset(approver_roles),
        require_reason=_typed(raw, "require_reason", bool, True),
        ticket_pattern=ticket_pattern,
        channels=frozenset(channels),
        mfa_per_session=_typed(raw, "mfa_per_session", bool, False),
        idp_mfa=frozenset(_strings(raw, "idp_mfa", ())),
        hours=hours,
        break_glass=_typed(raw, "break_glass", bool, False),
        http_methods=http_methods,
        http_paths=http_paths,
        groups=parse_groups(raw.get("groups", [])),
        sudo=parse_sudo(raw.get("sudo", "")),
        provision_at=_provision_at(raw),
        forward_to=forward_to,
    )


def _provision_at(raw: Mapping[str, Any]) -> str:
    value = str(_typed(raw, "provision_at", str, "session"))
    if value not in ("session", "approval"):
        raise InvalidInput("provision_at must be session or approval")
    return value


def _glob(patterns: Sequence[str], value: str) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def http_request_allowed(rule: Rule, method: str, path: str) -> bool:
    """Whether ``rule`` lets one web request through: the rule allows the channel kind
    ``http``, the method (an HTTP token, compared upper-cased) matches ``http_methods``, and
    the path (no query), once normalised by ``normalize_http_path``, matches ``http_paths``.
    A path that cannot be normalised safely is refused, so ``/public/%2e%2e/admin`` is judged
    as ``/admin`` and ``/public/..;/admin`` never at all. Globs are fnmatch-style and ``*``
    crosses ``/``: ``/public/*`` covers every path below ``/public/``."""
    if "http" not in rule.channels or not is_method_token(method):
        return False
    normalised = normalize_http_path(path)
    if normalised is None:
        return False
    return _glob(rule.http_methods, method.upper()) and _glob(rule.http_paths, normalised)


def rule_covers(rule: Rule, target: Target, account: str) -> bool:
    """Whether ``rule`` speaks about this target and account (roles aside)."""
    return (
        _glob(rule.targets, target.name)
        and all(target.labels.get(k) == v for k, v in rule.labels.items())
        and _glob(rule.accounts, account)
    )


def match_rule(
    rules: Sequence[Rule], roles: frozenset[str], target: Target, account: str
) -> Rule | None:
    """The first rule (in configuration order) that lets these roles request target/account."""
    for rule in rules:
        if (rule.roles & roles or "*" in rule.roles) and rule_covers(rule, target, account):
            return rule
    return None


def may_approve(rule: Rule, approver_roles: frozenset[str]) -> bool:
    return "admin" in approver_roles or bool(rule.approver_roles & approver_roles)


@dataclass(frozen=True)
class RequestTerms:
    """What a request asks for once its rule's limits and defaults are applied."""

    duration: timedelta
    reason: str
    ticket: str


def check_request(
    rule: Rule, target: str, duration: timedelta | None, reason: str, ticket: str, now: datetime
) -> RequestTerms:
    """The rule's checks of a new request, pure: the duration (the rule's default when none
    is given; at most its maximum), a reason when the rule requires one, the ticket pattern,
    and the allowed hours (break-glass rules ignore them). Raises InvalidInput or
    AccessDenied with a line for the requester."""
    duration = duration or rule.default_duration
    if duration <= timedelta(0):
        raise InvalidInput("the duration must be positive")
    if duration > rule.max_duration:
        raise Refused(
            f"at most {format_duration(rule.max_duration)} on {target} (rule {rule.name})"
        )
    reason = clean_text(reason, "reason", required=rule.require_reason)
    ticket = clean_text(ticket, "ticket")
    if rule.ticket_pattern and not re.search(rule.ticket_pattern, ticket):
        raise Refused(f"a ticket matching {rule.ticket_pattern} is required")
    hours = parse_hours(rule.hours)
    if hours is not None and not hours.contains(now) and not rule.break_glass:
        raise AccessDenied(f"{target} may be requested only {rule.hours}")
    return RequestTerms(duration, reason, ticket)


def clean_text(value: str, what: str, *, required: bool = False) -> str:
    """``value`` with white space folded; InvalidInput when required and empty, or too long."""
    value = " ".join(value.split())
    if required and not value:
        raise Refused(f"a {what} is required")
    if len(value) > MAX_TEXT:
        raise InvalidInput(f"the {what} is longer than {MAX_TEXT} characters")
    return value


@dataclass(frozen=True)
class SessionFacts:
    user_name: str
    user: User | None
    target_name: str
    target: Target | None
    account: str | None  # None: the target's default account
    locks: Sequence[Lock]
    grants: Sequence[Grant]  # the user's grants on this target (any state)
    rules: Sequence[Rule]
    channel: str | None  # None: session-level check only
    gateway_hint: str = "ssh -p 2222 {user}@gateway"


def _deny(reason: str, message: str) -> Decision:
    return Decision(False, reason, message)


def evaluate_session(facts: SessionFacts, now: datetime) -> tuple[Decision, Grant | None]:
    """Decide whether a session (or a new channel in it) may proceed, in the contract's order:
    user exists and is enabled, user not locked, target not locked, an active grant covers
    (user, target, account, now), the grant's rule allows the channel kind and the hour.
    Unknown users and unknown targets are refused with the same words as missing grants, so
    the answer reveals nothing about what exists."""
    user, target = facts.user, facts.target
    account = facts.account or (target.default_account if target else None) or ""
    hint = facts.gateway_hint.format(user=facts.user_name)
    no_grant = _deny(
        "no_grant",
        f"no active grant for {facts.user_name} -> {account or '?'}@{facts.target_name}; "
        f"request one: {hint} request {facts.target_name}"
        + (f" --account {account}" if account else "")
        + ' --for 30m --reason "..."',
    )
    if user is None or user.disabled:
        return (
            _deny("user_disabled", f"user {facts.user_name} is disabled")
            if user is not None
            else no_grant
        ), None
    for lock in facts.locks:
        if lock.is_active(now) and lock.kind == "user" and lock.name == user.name:
            return _deny("user_locked", f"user {user.name} is locked: {lock.reason}"), None
    if target is None:
        return no_grant, None
    for lock in facts.locks:
        if lock.is_active(now) and lock.kind == "target" and lock.name == target.name:
            return _deny("target_locked", f"target {target.name} is locked: {lock.reason}"), None
    if not account:
        return _deny(
            "no_account",
            f"target {target.name} has no default account; "
            f"name one: {facts.user_name}+ACCOUNT@{target.name}",
        ), None
    grant = next(
        (
            g
            for g in facts.grants
            if g.user == user.name
            and g.target == target.name
            and g.account == account
            and g.is_active(now)
        ),
        None,
    )
    if grant is None:
        return no_grant, None
    rule = next((r for r in facts.rules if r.name == grant.rule), None)
    if rule is None:
        return _deny(
            "rule_gone", f"the rule {grant.rule} that granted this access no longer exists"
        ), grant
    if facts.channel is not None and facts.channel not in rule.channels:
        return _deny(
            "channel_not_allowed",
            f"{facts.channel.replace('_', ' ')} is not allowed on {target.name} "
            f"by rule {rule.name}",
        ), grant
    hours = parse_hours(rule.hours)
    if hours is not None and not hours.contains(now) and not grant.break_glass:
        return _deny(
            "outside_hours", f"access to {target.name} is allowed only {rule.hours}"
        ), grant
    return Decision(
        True,
        "allowed",
        f"access to {account}@{target.name} until {grant.expires_at:%Y-%m-%d %H:%M} UTC",
        rule.name,
    ), grant
