"""The plumbing every part of the policy service shares: one transaction-and-retry helper,
the actor checks, the audit call, and the loaders the other parts build on."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from policy import store
from policy.audit import AuditWriter
from policy.errors import (
    AccessDenied,
    ConcurrentUpdate,
    Conflict,
    InvalidInput,
    NotFound,
)
from policy.models import (
    ADMIN,
    Clock,
    Grant,
    Rule,
    Target,
    User,
    utcnow,
)
from policy.passwords import verify_password
from policy.tickets import TicketCheck

SYSTEM_ACTOR = "lockgate"  # the built-in administrator (CLI on the gateway host, no --as)
REQUEST_TTL = timedelta(hours=24)  # a pending request nobody answers expires
_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,63}$")
_TARGET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ROLE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_RETRIES = 8
T = TypeVar("T")
# (stored hash or None, password) -> whether it matches; argon2 is slow on purpose.
PasswordCheck = Callable[[str | None, str], Awaitable[bool]]


async def _check_in_thread(stored: str | None, password: str) -> bool:
    return await asyncio.to_thread(verify_password, stored, password)


@dataclass(frozen=True)
class SessionAuthorization:
    """Result of checking one session or channel. ``grant``/``rule`` are set when allowed."""

    decision: Any  # policy.models.Decision
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


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def normalize_key(line: str) -> str:
    """``TYPE BASE64`` of an OpenSSH public key line; raises InvalidInput if it does not parse."""
    import asyncssh  # not at the top: every `lockgate` command imports this module

    try:
        key = asyncssh.import_public_key(line.strip())
    except (asyncssh.KeyImportError, ValueError):
        raise InvalidInput("not an OpenSSH public key") from None
    return " ".join(key.export_public_key().decode().split()[:2])


class ServiceBase:
    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        rules: Sequence[Rule],
        audit: AuditWriter,
        clock: Clock = utcnow,
        *,
        gateway_hint: str = "ssh -p 2222 {user}@gateway",
        tickets: TicketCheck | None = None,
        password_check: PasswordCheck = _check_in_thread,
    ) -> None:
        self.maker = maker
        self.tickets = tickets
        self.password_check = password_check
        self.rules = tuple(rules)
        self.audit = audit
        self.clock = clock
        self.gateway_hint = gateway_hint

    def now(self) -> datetime:
        return self.clock()

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    # --- plumbing --------------------------------------------------------------
    async def _roles(self, db: AsyncSession, actor: str) -> frozenset[str]:
        if actor == SYSTEM_ACTOR:
            return frozenset({ADMIN})
        user = await store.load_user(db, actor)
        if user is None or user.disabled:
            raise AccessDenied(f"unknown or disabled user {actor!r}")
        return user.roles

    async def _admin(self, db: AsyncSession, actor: str, what: str) -> None:
        if ADMIN not in await self._roles(db, actor):
            raise AccessDenied(f"{actor} may not {what}")

    async def _audit(
        self,
        db: AsyncSession,
        actor: str,
        action: str,
        subject: str,
        *,
        access_changed: bool = False,
        **details: Any,
    ) -> None:
        await self.audit.append(
            db,
            actor=actor,
            action=action,
            subject=subject,
            details=details,
            access_changed=access_changed,
        )

    async def _write(self, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``fn`` in a transaction, retrying when a compare-and-swap lost a race."""
        for _ in range(_RETRIES):
            try:
                async with self.maker() as db, db.begin():
                    return await fn(db)
            except ConcurrentUpdate:
                continue
        raise Conflict("too much contention; try again")

    async def get_user(self, name: str) -> User:
        async with self.maker() as db:
            user = await store.load_user(db, name)
        if user is None:
            raise NotFound(f"no user {name}")
        return user

    async def get_target(self, name: str) -> Target:
        async with self.maker() as db:
            target = await store.load_target(db, name)
        if target is None:
            raise NotFound(f"no target {name}")
        return target
