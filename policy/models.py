"""Value objects of the access model. Frozen; all times are timezone-aware UTC."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

ADMIN = "admin"
AUDITOR = "auditor"

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


TargetKind = Literal["ssh", "http"]
ChannelKind = Literal["shell", "exec", "sftp", "port_forward", "http"]
CHANNEL_KINDS: frozenset[str] = frozenset({"shell", "exec", "sftp", "port_forward", "http"})
LockKind = Literal["user", "target"]


@dataclass(frozen=True)
class User:
    id: str
    name: str
    roles: frozenset[str]
    public_keys: tuple[str, ...]  # OpenSSH one-line public keys
    has_password: bool
    totp_enabled: bool
    disabled: bool
    created_at: datetime

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    @property
    def is_auditor(self) -> bool:
        return AUDITOR in self.roles or ADMIN in self.roles


@dataclass(frozen=True)
class Target:
    id: str
    name: str
    kind: TargetKind
    host: str | None  # ssh
    port: int  # ssh (22 default); ignored for http
    host_key: str | None  # pinned OpenSSH public key "TYPE BASE64"
    url: str | None  # http base URL
    tls_verify: bool  # http: False means insecure (no certificate check at all)
    labels: Mapping[str, str]
    accounts: tuple[str, ...]
    default_account: str | None
    created_at: datetime
    tls_ca: str | None = None  # http: PEM CA bundle trusted instead of the system store
    tls_fingerprint: str | None = None  # http: pinned SHA-256 of the upstream cert, hex
    preserve_host: bool = False  # http: send the person's Host upstream, not the URL's
    sensitive_params: tuple[str, ...] = ()  # http: query parameters masked in recordings
    record_bodies: int = 0  # http: max bytes of non-GET request bodies recorded; 0 = off
    provision: str = "none"  # ssh: none | ephemeral | elevate (policy.provisioning)
    uid_min: int = 50000  # ssh, ephemeral: the UIDs its accounts get
    uid_max: int = 59999
    home_archive: str = ""  # ssh, ephemeral: homes moved here at removal; "" = deleted


@dataclass(frozen=True)
class Rule:
    name: str
    roles: frozenset[str]
    targets: tuple[str, ...] = ("*",)  # names or globs
    labels: Mapping[str, str] = field(default_factory=dict)
    accounts: tuple[str, ...] = ("*",)
    max_duration: timedelta = timedelta(hours=4)
    default_duration: timedelta = timedelta(hours=1)
    approvals: int = 1
    approver_roles: frozenset[str] = frozenset()
    require_reason: bool = True
    ticket_pattern: str = ""
    channels: frozenset[str] = frozenset({"shell", "exec", "sftp"})
    mfa_per_session: bool = False
    # amr/acr values of an identity provider's sign-in that stand in for the per-session TOTP
    idp_mfa: frozenset[str] = frozenset()
    hours: str = ""  # "Mon-Fri 08:00-20:00 Europe/Paris"
    break_glass: bool = False
    http_methods: tuple[str, ...] = ("*",)  # web targets: upper-case method globs
    http_paths: tuple[str, ...] = ("/*",)  # web targets: globs over the normalised path
    groups: tuple[str, ...] = ()  # provisioned targets: the account's extra groups
    sudo: tuple[str, ...] = ()  # provisioned targets: ("ALL",) or absolute commands
    provision_at: str = "session"  # provisioned targets: session (the first one) | approval
    forward_to: tuple[str, ...] = ()  # port-forward allowlist (policy.forwarding); () = none


class RequestState(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Approval:
    approver: str
    decision: Literal["approve", "deny"]
    comment: str
    at: datetime


@dataclass(frozen=True)
class AccessRequest:
    id: str
    user: str
    target: str
    account: str
    duration: timedelta
    reason: str
    ticket: str
    rule: str
    state: RequestState
    created_at: datetime
    expires_at: datetime  # a pending request expires unanswered at this time
    approvals: tuple[Approval, ...]
    grant_id: str | None  # the grant it produced or extends
    extends_grant: str | None  # set for an extension request
    break_glass: bool
    version: int
    ticket_summary: str = ""  # what the ticket system said of the ticket ("": not checked)


@dataclass(frozen=True)
class Grant:
    id: str
    user: str
    target: str
    account: str
    not_before: datetime
    expires_at: datetime
    request_id: str
    rule: str
    created_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None
    break_glass: bool
    version: int

    def is_active(self, now: datetime) -> bool:
        return self.revoked_at is None and self.not_before <= now < self.expires_at


@dataclass(frozen=True)
class Lock:
    id: str
    kind: LockKind
    name: str
    reason: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    lifted_at: datetime | None
    lifted_by: str | None

    def is_active(self, now: datetime) -> bool:
        return self.lifted_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True)
class Decision:
    """Outcome of a pure policy evaluation. ``reason`` is a stable machine code
    (``no_grant``, ``user_locked``, ``channel_not_allowed``...), ``message`` one line
    for the person."""

    allowed: bool
    reason: str
    message: str
    rule: str | None = None


@dataclass(frozen=True)
class ApiToken:
    id: str
    user: str
    created_at: datetime
    expires_at: datetime | None
    revoked: bool
