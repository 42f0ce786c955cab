"""The access-model service: what the CLI, the HTTP API and the SSH edge call.

Every mutating method takes ``actor`` (a user name, or ``SYSTEM_ACTOR`` for the built-in
administrator), checks that the actor may act, writes an audit event in the same
transaction, and returns the new value. Read methods that take ``viewer`` only return what
the viewer may see (a requester sees their own; approvers also what they may decide;
auditors and admins everything); missing and forbidden objects raise the same NotFound.
Concurrent changes to one request or grant produce exactly one transition: updates are
compare-and-swap on a version column and the loser re-reads and re-decides.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import asyncssh
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from policy import requests as machine
from policy import store
from policy import tables as t
from policy import tokens as tok
from policy.audit import AuditWriter
from policy.durations import format_duration
from policy.errors import AccessDenied, Conflict, InvalidInput, InvalidTransition, NotFound
from policy.models import (
    ADMIN,
    AUDITOR,
    AccessRequest,
    ApiToken,
    ChannelKind,
    Clock,
    Grant,
    Lock,
    LockKind,
    RequestState,
    Rule,
    Target,
    User,
    utcnow,
)
from policy.passwords import hash_password, verify_password
from policy.rules import SessionFacts, evaluate_session, match_rule, may_approve, parse_hours

SYSTEM_ACTOR = "lockgate"  # the built-in administrator (CLI on the gateway host, no --as)
REQUEST_TTL = timedelta(hours=24)  # a pending request nobody answers expires
MAX_TEXT = 500
_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,63}$")
_TARGET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ROLE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_RETRIES = 8
T = TypeVar("T")


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


def _text(value: str, what: str, *, required: bool = False) -> str:
    value = " ".join(value.split())
    if required and not value:
        raise InvalidInput(f"a {what} is required")
    if len(value) > MAX_TEXT:
        raise InvalidInput(f"the {what} is longer than {MAX_TEXT} characters")
    return value


def normalize_key(line: str) -> str:
    """``TYPE BASE64`` of an OpenSSH public key line; raises InvalidInput if it does not parse."""
    try:
        key = asyncssh.import_public_key(line.strip())
    except (asyncssh.KeyImportError, ValueError):
        raise InvalidInput("not an OpenSSH public key") from None
    return " ".join(key.export_public_key().decode().split()[:2])


class PolicyService:
    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        rules: Sequence[Rule],
        audit: AuditWriter,
        clock: Clock = utcnow,
        *,
        gateway_hint: str = "ssh -p 2222 {user}@gateway",
    ) -> None:
        self.maker = maker
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
        self, db: AsyncSession, actor: str, action: str, subject: str, **details: Any
    ) -> None:
        await self.audit.append(db, actor=actor, action=action, subject=subject, details=details)

    async def _write(self, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``fn`` in a transaction, retrying when a compare-and-swap lost a race."""
        for _ in range(_RETRIES):
            try:
                async with self.maker() as db, db.begin():
                    return await fn(db)
            except Conflict as exc:
                if "concurrently" not in str(exc):
                    raise
        raise Conflict("too much contention; try again")

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
        """Admin only. Names are lower-case (no ``+``/``@``: they separate the SSH login)."""
        if not _NAME.match(name) or name == SYSTEM_ACTOR:
            raise InvalidInput(f"invalid user name {name!r}: use a-z, 0-9, '.', '_', '-'")
        for role in roles:
            if not _ROLE.match(role):
                raise InvalidInput(f"invalid role {role!r}")
        keys = list(dict.fromkeys(normalize_key(k) for k in public_keys))
        if password is not None:
            # Check the actor before argon2 runs: hashing is deliberately expensive, and only
            # an admin may make the gateway spend it here.
            async with self.maker() as db:
                await self._admin(db, actor, "add users")
        hashed = hash_password(password) if password is not None else None

        async def write(db: AsyncSession) -> User:
            await self._admin(db, actor, "add users")
            if await store.user_row(db, name) is not None:
                raise Conflict(f"user {name} already exists")
            user_id = _new_id("us")
            await self._audit(
                db,
                actor,
                "user.add",
                name,
                roles=sorted(set(roles)),
                keys=len(keys),
                password=hashed is not None,
            )
            await db.execute(
                t.users.insert().values(
                    id=user_id,
                    name=name,
                    roles=json.dumps(sorted(set(roles))),
                    password_hash=hashed,
                    totp_enabled=False,
                    disabled=False,
                    created_at=self.now(),
                )
            )
            for key in keys:
                await db.execute(t.user_keys.insert().values(user_id=user_id, public_key=key))
            user = await store.load_user(db, name)
            assert user is not None
            return user

        return await self._write(write)

    async def get_user(self, name: str) -> User:
        async with self.maker() as db:
            user = await store.load_user(db, name)
        if user is None:
            raise NotFound(f"no user {name}")
        return user

    async def list_users(self) -> list[User]:
        async with self.maker() as db:
            return await store.list_users(db)

    async def _update_user(
        self, actor: str, name: str, action: str, what: str, values: dict[str, Any], **details: Any
    ) -> User:
        async def write(db: AsyncSession) -> User:
            if not (actor == name and action == "user.password"):
                await self._admin(db, actor, what)
            if await store.user_row(db, name) is None:
                raise NotFound(f"no user {name}")
            await self._audit(db, actor, action, name, **details)
            await db.execute(t.users.update().where(t.users.c.name == name).values(**values))
            user = await store.load_user(db, name)
            assert user is not None
            return user

        return await self._write(write)

    async def disable_user(self, actor: str, name: str) -> User:
        return await self._update_user(
            actor, name, "user.disable", "disable users", {"disabled": True}
        )

    async def set_password(self, actor: str, name: str, password: str) -> User:
        return await self._update_user(
            actor,
            name,
            "user.password",
            "set passwords",
            {"password_hash": await self._hash_as(actor, name, password)},
        )

    async def _hash_as(self, actor: str, name: str, password: str) -> str:
        """argon2 only for an actor allowed to set this password (admin or the user)."""
        if actor != name:
            async with self.maker() as db:
                await self._admin(db, actor, "set passwords")
        return hash_password(password)

    async def set_totp_enabled(self, actor: str, name: str, enabled: bool) -> User:
        return await self._update_user(
            actor,
            name,
            "user.totp",
            "change second factors",
            {"totp_enabled": enabled},
            enabled=enabled,
        )

    async def verify_password(self, name: str, password: str) -> User | None:
        """argon2id verify; equal work for unknown, disabled or password-less users."""
        async with self.maker() as db:
            row = await store.user_row(db, name)
            stored = row.password_hash if row is not None else None
            ok = verify_password(stored, password)
            if not ok or row is None or row.disabled:
                return None
            return await store.load_user(db, name)

    async def user_for_key(self, name: str, public_key: str) -> User | None:
        """The enabled user ``name`` if ``public_key`` (OpenSSH line) is registered to it."""
        try:
            wanted = normalize_key(public_key)
        except InvalidInput:
            return None
        async with self.maker() as db:
            user = await store.load_user(db, name)
        if user is None or user.disabled or wanted not in user.public_keys:
            return None
        return user

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
        if not _TARGET.match(name):
            raise InvalidInput(f"invalid target name {name!r}")
        if kind not in ("ssh", "http"):
            raise InvalidInput("target kind must be ssh or http")
        if kind == "ssh":
            if not host or not re.fullmatch(r"[A-Za-z0-9.:_-]{1,253}", host):
                raise InvalidInput("an SSH target needs a valid --host")
            if not 1 <= port <= 65535:
                raise InvalidInput("port must be between 1 and 65535")
            host_key = normalize_key(host_key) if host_key else None
        else:
            if not url or not re.fullmatch(r"https?://[^\s/$.?#][^\s]*", url):
                raise InvalidInput("a web target needs an http:// or https:// --url")
        for account in accounts:
            if not _NAME.match(account):
                raise InvalidInput(f"invalid account name {account!r}")
        accounts = list(dict.fromkeys(accounts))
        if default_account is None and accounts:
            default_account = accounts[0]
        if default_account is not None and default_account not in accounts:
            if not _NAME.match(default_account):
                raise InvalidInput(f"invalid account name {default_account!r}")
            accounts.append(default_account)
        for key, value in (labels or {}).items():
            if not _ROLE.match(key) or len(value) > 64:
                raise InvalidInput(f"invalid label {key}={value}")

        async def write(db: AsyncSession) -> Target:
            await self._admin(db, actor, "add targets")
            if await store.load_target(db, name) is not None:
                raise Conflict(f"target {name} already exists")
            await self._audit(
                db,
                actor,
                "target.add",
                name,
                kind=kind,
                host=host,
                port=port,
                url=url,
                accounts=accounts,
                pinned=host_key is not None,
            )
            await db.execute(
                t.targets.insert().values(
                    id=_new_id("tg"),
                    name=name,
                    kind=kind,
                    host=host,
                    port=port,
                    host_key=host_key,
                    url=url,
                    tls_verify=tls_verify,
                    labels=json.dumps(labels or {}, sort_keys=True),
                    accounts=json.dumps(accounts),
                    default_account=default_account,
                    created_at=self.now(),
                )
            )
            target = await store.load_target(db, name)
            assert target is not None
            return target

        return await self._write(write)

    async def set_target_endpoint(
        self, actor: str, name: str, *, host: str, port: int, host_key: str
    ) -> Target:
        """Admin only: move an SSH target and re-pin its host key (audited)."""
        pinned = normalize_key(host_key)

        async def write(db: AsyncSession) -> Target:
            await self._admin(db, actor, "change targets")
            if await store.load_target(db, name) is None:
                raise NotFound(f"no target {name}")
            await self._audit(db, actor, "target.endpoint", name, host=host, port=port)
            await db.execute(
                t.targets.update()
                .where(t.targets.c.name == name)
                .values(host=host, port=port, host_key=pinned)
            )
            target = await store.load_target(db, name)
            assert target is not None
            return target

        return await self._write(write)

    async def get_target(self, name: str) -> Target:
        async with self.maker() as db:
            target = await store.load_target(db, name)
        if target is None:
            raise NotFound(f"no target {name}")
        return target

    async def list_targets(self) -> list[Target]:
        async with self.maker() as db:
            return await store.list_targets(db)

    async def requestable(self, user: str) -> list[Requestable]:
        """Targets (with accounts and the governing rule) that ``user`` may request."""
        person = await self.get_user(user)
        found = []
        for target in await self.list_targets():
            accounts = target.accounts or (
                (target.default_account,) if target.default_account else ()
            )
            by_rule: dict[str, tuple[Rule, list[str]]] = {}
            for account in accounts:
                rule = match_rule(self.rules, person.roles, target, account)
                if rule is not None:
                    by_rule.setdefault(rule.name, (rule, []))[1].append(account)
            for rule, names in by_rule.values():
                found.append(Requestable(target, tuple(names), rule))
        return found

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
        """``actor`` asks for access for themself. Zero-approval and break-glass rules approve
        at once and create the grant (``grant_id`` set)."""
        now = self.now()
        person = await self.get_user(actor) if actor != SYSTEM_ACTOR else None
        if person is None or person.disabled:
            raise AccessDenied("only an enabled user can request access")
        tgt = await self.get_target(target)
        account = account or tgt.default_account
        if not account or (tgt.accounts and account not in tgt.accounts):
            raise InvalidInput(
                f"target {tgt.name} has no account {account or '(default)'}; "
                f"accounts: {', '.join(tgt.accounts) or 'none'}"
            )
        rule = match_rule(self.rules, person.roles, tgt, account)
        if rule is None:
            raise AccessDenied(f"no rule lets {actor} request {account}@{tgt.name}")
        duration = duration or rule.default_duration
        if duration > rule.max_duration:
            raise InvalidInput(
                f"at most {format_duration(rule.max_duration)} on {tgt.name} (rule {rule.name})"
            )
        reason = _text(reason, "reason", required=rule.require_reason)
        ticket = _text(ticket, "ticket")
        if rule.ticket_pattern and not re.search(rule.ticket_pattern, ticket):
            raise InvalidInput(f"a ticket matching {rule.ticket_pattern} is required")
        hours = parse_hours(rule.hours)
        if hours is not None and not hours.contains(now) and not rule.break_glass:
            raise AccessDenied(f"{tgt.name} may be requested only {rule.hours}")
        request = AccessRequest(
            id=_new_id("rq"),
            user=actor,
            target=tgt.name,
            account=account,
            duration=duration,
            reason=reason,
            ticket=ticket,
            rule=rule.name,
            state=RequestState.PENDING,
            created_at=now,
            expires_at=now + REQUEST_TTL,
            approvals=(),
            grant_id=None,
            extends_grant=None,
            break_glass=rule.break_glass,
            version=1,
        )

        async def write(db: AsyncSession) -> AccessRequest:
            pending = await store.list_requests(
                db,
                [
                    t.requests.c.user == actor,
                    t.requests.c.target == tgt.name,
                    t.requests.c.account == account,
                    t.requests.c.state == "pending",
                    t.requests.c.extends_grant.is_(None),
                    t.requests.c.expires_at > now,
                ],
            )
            if pending:
                raise Conflict(
                    f"you already have pending request {pending[0].id} for {account}@{tgt.name}"
                )
            await self._audit(
                db,
                actor,
                "request.create",
                request.id,
                target=tgt.name,
                account=account,
                duration=format_duration(duration),
                reason=reason,
                ticket=ticket,
                rule=rule.name,
            )
            await store.insert_request(db, request)
            if rule.approvals == 0 or rule.break_glass:
                return await self._grant(
                    db, request, replace(request, state=RequestState.APPROVED), rule, now
                )
            return request

        return await self._write(write)

    async def _grant(
        self, db: AsyncSession, old: AccessRequest, new: AccessRequest, rule: Rule, now: datetime
    ) -> AccessRequest:
        """Persist an approved request and create (or extend) its grant, audited."""
        if new.extends_grant:
            grant = await store.load_grant(db, new.extends_grant)
            if grant is None or grant.revoked_at is not None or grant.expires_at <= now:
                raise InvalidTransition(f"grant {new.extends_grant} is no longer active")
            expires = min(grant.expires_at + new.duration, now + rule.max_duration)
            await self._audit(
                db,
                SYSTEM_ACTOR,
                "grant.extend",
                grant.id,
                request=new.id,
                expires_at=expires.isoformat(),
            )
            await store.swap_grant(db, grant, expires_at=expires)
            return await store.swap_request(db, old, replace(new, grant_id=grant.id))
        grant = Grant(
            id=_new_id("gr"),
            user=new.user,
            target=new.target,
            account=new.account,
            not_before=now,
            expires_at=now + new.duration,
            request_id=new.id,
            rule=rule.name,
            created_at=now,
            revoked_at=None,
            revoked_by=None,
            revoke_reason=None,
            break_glass=new.break_glass,
            version=1,
        )
        await self._audit(
            db,
            SYSTEM_ACTOR,
            "grant.create",
            grant.id,
            request=new.id,
            user=grant.user,
            target=grant.target,
            account=grant.account,
            expires_at=grant.expires_at.isoformat(),
            break_glass=grant.break_glass,
        )
        await store.insert_grant(db, grant)
        return await store.swap_request(db, old, replace(new, grant_id=grant.id))

    async def _decide(
        self, actor: str, request_id: str, action: str, comment: str
    ) -> AccessRequest:
        async def write(db: AsyncSession) -> AccessRequest:
            now = self.now()
            roles = await self._roles(db, actor)
            request = await store.load_request(db, request_id)
            if request is None:
                raise NotFound(f"no request {request_id}")
            rule = self.rule(request.rule)
            if rule is None:
                raise InvalidTransition(
                    f"the rule {request.rule} of request {request_id} no longer exists"
                )
            if actor != request.user and not may_approve(rule, roles) and AUDITOR not in roles:
                raise NotFound(f"no request {request_id}")
            if action == "approve":
                new = machine.approve(request, rule, actor, roles, comment, now)
            else:
                new = machine.deny(request, rule, actor, roles, comment, now)
            await self._audit(
                db,
                actor,
                f"request.{action}",
                request.id,
                comment=" ".join(comment.split()),
                state=new.state.value,
            )
            if new.state is RequestState.APPROVED:
                return await self._grant(db, request, new, rule, now)
            return await store.swap_request(db, request, new)

        return await self._write(write)

    async def approve(self, actor: str, request_id: str, comment: str = "") -> AccessRequest:
        """One approval from a distinct approver holding an approver role of the rule (admins
        always qualify); self-approval raises AccessDenied. With enough approvals the request
        becomes approved and the grant is created (or extended)."""
        return await self._decide(actor, request_id, "approve", comment)

    async def deny(self, actor: str, request_id: str, comment: str) -> AccessRequest:
        return await self._decide(actor, request_id, "deny", comment)

    async def cancel(self, actor: str, request_id: str) -> AccessRequest:
        """The requester (or an admin) withdraws a pending request."""

        async def write(db: AsyncSession) -> AccessRequest:
            roles = await self._roles(db, actor)
            request = await store.load_request(db, request_id)
            if request is None or (request.user != actor and ADMIN not in roles):
                raise NotFound(f"no request {request_id}")
            new = machine.cancel(request, actor, ADMIN in roles, self.now())
            await self._audit(db, actor, "request.cancel", request.id)
            return await store.swap_request(db, request, new)

        return await self._write(write)

    def _visible_request(self, request: AccessRequest, viewer: str, roles: frozenset[str]) -> bool:
        if request.user == viewer or ADMIN in roles or AUDITOR in roles:
            return True
        rule = self.rule(request.rule)
        return rule is not None and may_approve(rule, roles)

    async def get_request(self, viewer: str, request_id: str) -> AccessRequest:
        async with self.maker() as db:
            roles = await self._roles(db, viewer)
            request = await store.load_request(db, request_id)
        if request is None or not self._visible_request(request, viewer, roles):
            raise NotFound(f"no request {request_id}")
        return machine.expire(request, self.now())

    async def list_requests(
        self, viewer: str, *, pending_only: bool = False, mine_only: bool = False
    ) -> list[AccessRequest]:
        """Requesters see their own; approvers also requests they could approve."""
        now = self.now()
        async with self.maker() as db:
            roles = await self._roles(db, viewer)
            where = [t.requests.c.user == viewer] if mine_only else []
            if pending_only:
                where += [t.requests.c.state == "pending", t.requests.c.expires_at > now]
            rows = await store.list_requests(db, where)
        return [machine.expire(r, now) for r in rows if self._visible_request(r, viewer, roles)]

    async def expire_requests(self) -> int:
        """Mark pending requests past their expiry as expired; returns how many."""
        now = self.now()

        async def write(db: AsyncSession) -> int:
            stale = await store.list_requests(
                db, [t.requests.c.state == "pending", t.requests.c.expires_at <= now]
            )
            for request in stale:
                await self._audit(db, SYSTEM_ACTOR, "request.expire", request.id)
                await store.swap_request(db, request, machine.expire(request, now))
            return len(stale)

        return await self._write(write)

    # --- grants ----------------------------------------------------------------
    async def get_grant(self, viewer: str, grant_id: str) -> Grant:
        async with self.maker() as db:
            roles = await self._roles(db, viewer)
            grant = await store.load_grant(db, grant_id)
        if grant is None or (grant.user != viewer and not roles & {ADMIN, AUDITOR}):
            raise NotFound(f"no grant {grant_id}")
        return grant

    async def list_grants(
        self, viewer: str, *, active_only: bool = False, mine_only: bool = False
    ) -> list[Grant]:
        now = self.now()
        async with self.maker() as db:
            roles = await self._roles(db, viewer)
            where = []
            if mine_only or not roles & {ADMIN, AUDITOR}:
                where.append(t.grants.c.user == viewer)
            if active_only:
                where += [
                    t.grants.c.revoked_at.is_(None),
                    t.grants.c.expires_at > now,
                    t.grants.c.not_before <= now,
                ]
            return await store.list_grants(db, where)

    async def revoke(self, actor: str, grant_id: str, reason: str) -> Grant:
        """Admin, or the grant's own user. Exactly one revocation under concurrency."""
        reason = _text(reason, "reason", required=True)

        async def write(db: AsyncSession) -> Grant:
            roles = await self._roles(db, actor)
            grant = await store.load_grant(db, grant_id)
            if grant is None or (grant.user != actor and ADMIN not in roles):
                raise NotFound(f"no grant {grant_id}")
            if grant.revoked_at is not None:
                raise InvalidTransition(f"grant {grant_id} was already revoked")
            await self._audit(
                db,
                actor,
                "grant.revoke",
                grant.id,
                reason=reason,
                user=grant.user,
                target=grant.target,
            )
            return await store.swap_grant(
                db, grant, revoked_at=self.now(), revoked_by=actor, revoke_reason=reason
            )

        return await self._write(write)

    async def extend(
        self, actor: str, grant_id: str, duration: timedelta, reason: str
    ) -> AccessRequest:
        """A new request linked to the grant; once approved it moves ``expires_at``."""
        now = self.now()
        grant = await self.get_grant(actor, grant_id)
        if grant.user != actor:
            raise AccessDenied("only the grant's own user can ask to extend it")
        if not grant.is_active(now):
            raise InvalidTransition(f"grant {grant_id} is not active")
        rule = self.rule(grant.rule)
        if rule is None:
            raise InvalidTransition(f"the rule {grant.rule} of grant {grant_id} no longer exists")
        if duration > rule.max_duration:
            raise InvalidInput(f"at most {format_duration(rule.max_duration)} (rule {rule.name})")
        reason = _text(reason, "reason", required=True)
        request = AccessRequest(
            id=_new_id("rq"),
            user=actor,
            target=grant.target,
            account=grant.account,
            duration=duration,
            reason=reason,
            ticket="",
            rule=rule.name,
            state=RequestState.PENDING,
            created_at=now,
            expires_at=min(now + REQUEST_TTL, grant.expires_at),
            approvals=(),
            grant_id=grant.id,
            extends_grant=grant.id,
            break_glass=False,
            version=1,
        )

        async def write(db: AsyncSession) -> AccessRequest:
            await self._audit(
                db,
                actor,
                "request.extend",
                request.id,
                grant=grant.id,
                duration=format_duration(duration),
                reason=reason,
            )
            await store.insert_request(db, request)
            if rule.approvals == 0:
                return await self._grant(
                    db, request, replace(request, state=RequestState.APPROVED), rule, now
                )
            return request

        return await self._write(write)

    async def active_grant(self, user: str, target: str, account: str) -> Grant | None:
        now = self.now()
        async with self.maker() as db:
            grants = await store.list_grants(
                db,
                [
                    t.grants.c.user == user,
                    t.grants.c.target == target,
                    t.grants.c.account == account,
                ],
            )
        active = [g for g in grants if g.is_active(now)]
        return max(active, key=lambda g: g.expires_at) if active else None

    # --- locks -----------------------------------------------------------------
    async def lock(
        self, actor: str, kind: LockKind, name: str, reason: str, duration: timedelta | None = None
    ) -> Lock:
        if kind not in ("user", "target"):
            raise InvalidInput("lock kind must be user or target")
        reason = _text(reason, "reason", required=True)
        now = self.now()

        async def write(db: AsyncSession) -> Lock:
            await self._admin(db, actor, "lock users or targets")
            exists = (
                await store.user_row(db, name)
                if kind == "user"
                else await store.load_target(db, name)
            )
            if exists is None:
                raise NotFound(f"no {kind} {name}")
            lock_id = _new_id("lk")
            expires = now + duration if duration else None
            await self._audit(
                db,
                actor,
                "lock.create",
                f"{kind}:{name}",
                reason=reason,
                expires_at=expires.isoformat() if expires else None,
            )
            await db.execute(
                t.locks.insert().values(
                    id=lock_id,
                    kind=kind,
                    name=name,
                    reason=reason,
                    created_by=actor,
                    created_at=now,
                    expires_at=expires,
                    lifted_at=None,
                    lifted_by=None,
                )
            )
            row = (await db.execute(sa.select(t.locks).where(t.locks.c.id == lock_id))).one()
            return store.to_lock(row)

        return await self._write(write)

    async def unlock(self, actor: str, kind: LockKind, name: str) -> Lock:
        now = self.now()

        async def write(db: AsyncSession) -> Lock:
            await self._admin(db, actor, "lift locks")
            live = [
                lk
                for lk in await store.open_locks(db, [name])
                if lk.kind == kind and lk.is_active(now)
            ]
            if not live:
                raise NotFound(f"{kind} {name} is not locked")
            await self._audit(db, actor, "lock.lift", f"{kind}:{name}")
            await db.execute(
                t.locks.update()
                .where(t.locks.c.id.in_([lk.id for lk in live]))
                .values(lifted_at=now, lifted_by=actor)
            )
            return replace(live[-1], lifted_at=now, lifted_by=actor)

        return await self._write(write)

    async def list_locks(self, *, active_only: bool = True) -> list[Lock]:
        now = self.now()
        async with self.maker() as db:
            if active_only:
                return [lk for lk in await store.open_locks(db) if lk.is_active(now)]
            rows = (await db.execute(sa.select(t.locks).order_by(t.locks.c.created_at))).all()
            return [store.to_lock(r) for r in rows]

    # --- sessions --------------------------------------------------------------
    async def authorize_session(
        self, user: str, target: str, account: str | None, channel: ChannelKind | None
    ) -> SessionAuthorization:
        """The check every edge makes when a session opens and for every new channel: user
        exists and is enabled, user not locked, target not locked, an active grant covers
        (user, target, account, now), the grant's rule allows ``channel`` and the hour. Never
        raises for a refusal: the Decision says why. ``account`` None = the default account."""
        now = self.now()
        async with self.maker() as db:
            person = await store.load_user(db, user)
            tgt = await store.load_target(db, target)
            locks = await store.open_locks(db, [user, target])
            grants = await store.list_grants(
                db, [t.grants.c.user == user, t.grants.c.target == target]
            )
        facts = SessionFacts(
            user_name=user,
            user=person,
            target_name=target,
            target=tgt,
            account=account,
            locks=locks,
            grants=grants,
            rules=self.rules,
            channel=channel,
            gateway_hint=self.gateway_hint,
        )
        decision, grant = evaluate_session(facts, now)
        resolved = account or (tgt.default_account if tgt else None)
        rule = self.rule(grant.rule) if grant is not None else None
        return SessionAuthorization(decision, person, tgt, resolved, grant, rule)

    # --- API tokens ------------------------------------------------------------
    async def create_token(
        self, actor: str, user: str, duration: timedelta | None = None
    ) -> tuple[str, ApiToken]:
        """Admins, or a user for themself. The plaintext is returned once; only a hash is kept."""
        now = self.now()
        token_id, token, hashed = tok.new_token()

        async def write(db: AsyncSession) -> ApiToken:
            if actor != user:
                await self._admin(db, actor, "create tokens for others")
            owner = await store.user_row(db, user)
            if owner is None or owner.disabled:
                raise NotFound(f"no enabled user {user}")
            expires = now + duration if duration else None
            await self._audit(
                db,
                actor,
                "token.create",
                token_id,
                user=user,
                expires_at=expires.isoformat() if expires else None,
            )
            await db.execute(
                t.tokens.insert().values(
                    id=token_id,
                    user=user,
                    secret_hash=hashed,
                    created_at=now,
                    expires_at=expires,
                    revoked=False,
                )
            )
            return ApiToken(token_id, user, now, expires, False)

        return token, await self._write(write)

    async def authenticate_token(self, token: str) -> User | None:
        """Constant-time check of a bearer token; None if unknown, expired, revoked or the
        user is disabled."""
        parts = tok.split(token)
        if parts is None:
            return None
        token_id, secret = parts
        async with self.maker() as db:
            row = (await db.execute(sa.select(t.tokens).where(t.tokens.c.id == token_id))).first()
            valid = tok.matches(secret, row.secret_hash if row else tok.digest("x"))
            if row is None or not valid or row.revoked:
                return None
            info = store.to_token(row)
            if info.expires_at is not None and info.expires_at <= self.now():
                return None
            user = await store.load_user(db, info.user)
        return user if user is not None and not user.disabled else None
