"""The access-model service: what the CLI, the HTTP API and the SSH edge call.

Every mutating method takes ``actor`` (a user name, or ``"system"``/``"lockgate"`` for the
built-in administrator), checks that the actor may act, writes an audit event in the same
transaction, and returns the new value. Read methods that take ``viewer`` only return what
the viewer may see (a requester sees their own; auditors and admins see everything; a
NotFound is raised alike for missing and forbidden objects).

STUB: signatures are the contract shared with the gateway; bodies are being implemented.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from policy.audit import AuditWriter
from policy.models import (
    AccessRequest,
    ApiToken,
    ChannelKind,
    Clock,
    Decision,
    Grant,
    Lock,
    LockKind,
    Rule,
    Target,
    User,
    utcnow,
)

SYSTEM_ACTOR = "lockgate"  # the built-in administrator (CLI on the gateway host, no --as)


@dataclass(frozen=True)
class SessionAuthorization:
    """Result of checking one session or channel. ``grant``/``rule`` are set when allowed."""

    decision: Decision
    user: User | None
    target: Target | None
    account: str | None
    grant: Grant | None
    rule: Rule | None


@dataclass(frozen=True)
class Requestable:
    target: Target
    accounts: tuple[str, ...]
    rule: Rule


class PolicyService:
    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        rules: Sequence[Rule],
        audit: AuditWriter,
        clock: Clock = utcnow,
    ) -> None:
        self.maker = maker
        self.rules = tuple(rules)
        self.audit = audit
        self.clock = clock

    # --- users -----------------------------------------------------------------
    async def add_user(
        self,
        actor: str,
        name: str,
        *,
        roles: Sequence[str] = (),
        public_keys: Sequence[str] = (),
        password: str | None = None,
    ) -> User:
        """Admin only. Validates the name, each OpenSSH public key, hashes the password with argon2id."""
        raise NotImplementedError

    async def get_user(self, name: str) -> User:
        raise NotImplementedError

    async def list_users(self) -> list[User]:
        raise NotImplementedError

    async def disable_user(self, actor: str, name: str) -> User:
        raise NotImplementedError

    async def set_password(self, actor: str, name: str, password: str) -> User:
        raise NotImplementedError

    async def set_totp_enabled(self, actor: str, name: str, enabled: bool) -> User:
        raise NotImplementedError

    async def verify_password(self, name: str, password: str) -> User | None:
        """argon2id verify; equal work for unknown, disabled or password-less users. None when refused."""
        raise NotImplementedError

    async def user_for_key(self, name: str, public_key: str) -> User | None:
        """The enabled user ``name`` if ``public_key`` (OpenSSH line) is registered to it, else None."""
        raise NotImplementedError

    # --- targets ---------------------------------------------------------------
    async def add_target(
        self,
        actor: str,
        name: str,
        *,
        kind: str = "ssh",
        host: str | None = None,
        port: int = 22,
        host_key: str | None = None,
        url: str | None = None,
        tls_verify: bool = True,
        labels: dict[str, str] | None = None,
        accounts: Sequence[str] = (),
        default_account: str | None = None,
    ) -> Target:
        raise NotImplementedError

    async def get_target(self, name: str) -> Target:
        raise NotImplementedError

    async def list_targets(self) -> list[Target]:
        raise NotImplementedError

    async def requestable(self, user: str) -> list[Requestable]:
        """Targets (with accounts and the governing rule) that ``user`` may request."""
        raise NotImplementedError

    # --- requests --------------------------------------------------------------
    async def create_request(
        self,
        actor: str,
        target: str,
        *,
        account: str | None = None,
        duration: timedelta | None = None,
        reason: str = "",
        ticket: str = "",
    ) -> AccessRequest:
        """``actor`` asks for access for themself. Picks the matching rule; zero-approval and
        break-glass rules approve at once and create the grant (``grant_id`` set)."""
        raise NotImplementedError

    async def approve(self, actor: str, request_id: str, comment: str = "") -> AccessRequest:
        """Counts one approval from a distinct approver holding an approver role of the rule
        (admins always qualify). Self-approval raises AccessDenied. When enough approvals are
        in, the request becomes approved and the grant is created (or extended). Concurrent
        calls produce exactly one transition (optimistic version, retry)."""
        raise NotImplementedError

    async def deny(self, actor: str, request_id: str, comment: str) -> AccessRequest:
        raise NotImplementedError

    async def cancel(self, actor: str, request_id: str) -> AccessRequest:
        """The requester (or an admin) withdraws a pending request."""
        raise NotImplementedError

    async def get_request(self, viewer: str, request_id: str) -> AccessRequest:
        raise NotImplementedError

    async def list_requests(
        self, viewer: str, *, pending_only: bool = False, mine_only: bool = False
    ) -> list[AccessRequest]:
        """Requesters see their own; approvers also see requests they could approve."""
        raise NotImplementedError

    async def expire_requests(self) -> int:
        """Mark pending requests past their expiry as expired; returns how many."""
        raise NotImplementedError

    # --- grants ----------------------------------------------------------------
    async def get_grant(self, viewer: str, grant_id: str) -> Grant:
        raise NotImplementedError

    async def list_grants(
        self, viewer: str, *, active_only: bool = False, mine_only: bool = False
    ) -> list[Grant]:
        raise NotImplementedError

    async def revoke(self, actor: str, grant_id: str, reason: str) -> Grant:
        """Admin, or the grant's own user. Exactly one revocation under concurrency."""
        raise NotImplementedError

    async def extend(
        self, actor: str, grant_id: str, duration: timedelta, reason: str
    ) -> AccessRequest:
        """A new request linked to the grant; once approved it moves ``expires_at``."""
        raise NotImplementedError

    async def active_grant(self, user: str, target: str, account: str) -> Grant | None:
        raise NotImplementedError

    # --- locks -----------------------------------------------------------------
    async def lock(
        self, actor: str, kind: LockKind, name: str, reason: str, duration: timedelta | None = None
    ) -> Lock:
        raise NotImplementedError

    async def unlock(self, actor: str, kind: LockKind, name: str) -> Lock:
        raise NotImplementedError

    async def list_locks(self, *, active_only: bool = True) -> list[Lock]:
        raise NotImplementedError

    # --- sessions --------------------------------------------------------------
    async def authorize_session(
        self, user: str, target: str, account: str | None, channel: ChannelKind | None
    ) -> SessionAuthorization:
        """The check the SSH/HTTP edges make when a session opens and again for every new
        channel: user exists and is enabled, user not locked, target not locked, an active
        grant covers (user, target, account, now), the grant's rule allows ``channel`` (None =
        session-level check only) and its hours. Never raises for a refusal: the Decision says
        why. ``account`` None means the target's default account."""
        raise NotImplementedError

    # --- API tokens ------------------------------------------------------------
    async def create_token(
        self, actor: str, user: str, duration: timedelta | None = None
    ) -> tuple[str, ApiToken]:
        """Returns the token plaintext once (shown to the caller, never stored: only its hash)."""
        raise NotImplementedError

    async def authenticate_token(self, token: str) -> User | None:
        """Constant-time check of a bearer token; None if unknown, expired, revoked or user disabled."""
        raise NotImplementedError

    def now(self) -> datetime:
        return self.clock()
