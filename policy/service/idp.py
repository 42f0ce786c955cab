"""The policy service's side of an identity provider: users created and their roles set from
claims, and access withdrawn when the provider stops granting it.

Each change is one transaction with its audit events; a role removed, a grant revoked, a
user disabled is ``access_changed`` so every node re-checks its live sessions at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from policy import store
from policy import tables as t
from policy.errors import InvalidInput, NotFound
from policy.models import AccessRequest, Grant, RequestState, User
from policy.rules import clean_text
from policy.service.base import _NAME, _ROLE, SYSTEM_ACTOR, ServiceBase, _new_id


@dataclass(frozen=True)
class RoleChange:
    user: User
    added: frozenset[str]
    removed: frozenset[str]
    created: bool


@dataclass(frozen=True)
class Withdrawn:
    grants: tuple[Grant, ...]
    requests: tuple[AccessRequest, ...]


class IdpMixin(ServiceBase):
    async def sync_roles(
        self, name: str, roles: Iterable[str], *, via: str, create: bool
    ) -> RoleChange:
        """Set ``name``'s roles to ``roles`` (creating the user when ``create`` and absent),
        audited as ``user.roles`` with what was added and removed and ``via`` (the provider).
        NotFound when the user is absent and ``create`` is false."""
        wanted = sorted(set(roles))
        for role in wanted:
            if not _ROLE.match(role):
                raise InvalidInput(f"invalid role {role!r}")
        if not _NAME.match(name) or name == SYSTEM_ACTOR:
            raise InvalidInput(f"invalid user name {name!r}")

        async def write(db: AsyncSession) -> RoleChange:
            row = await store.user_row(db, name)
            created = row is None
            if row is None:
                if not create:
                    raise NotFound(f"no user {name}")
                await self._audit(db, SYSTEM_ACTOR, "user.add", name, roles=wanted, via=via)
                await db.execute(
                    t.users.insert().values(
                        id=_new_id("us"),
                        name=name,
                        roles=json.dumps(wanted),
                        password_hash=None,
                        totp_enabled=False,
                        disabled=False,
                        created_at=self.now(),
                    )
                )
                before: set[str] = set()
            else:
                before = set(json.loads(row.roles))
            added, removed = frozenset(set(wanted) - before), frozenset(before - set(wanted))
            if not created and (added or removed):
                await self._audit(
                    db,
                    SYSTEM_ACTOR,
                    "user.roles",
                    name,
                    access_changed=bool(removed),
                    added=sorted(added),
                    removed=sorted(removed),
                    via=via,
                )
                await db.execute(
                    t.users.update().where(t.users.c.name == name).values(roles=json.dumps(wanted))
                )
            user = await store.load_user(db, name)
            assert user is not None
            return RoleChange(user, added if not created else frozenset(wanted), removed, created)

        return await self._write(write)

    async def set_deprovisioned(self, name: str, disabled: bool, *, via: str, reason: str) -> User:
        """Disable (``user.deprovision``) or re-enable (``user.reprovision``) a user on the
        word of an identity provider, audited with the reason."""
        reason = clean_text(reason, "reason", required=True)
        action = "user.deprovision" if disabled else "user.reprovision"

        async def write(db: AsyncSession) -> User:
            if await store.user_row(db, name) is None:
                raise NotFound(f"no user {name}")
            await self._audit(
                db, SYSTEM_ACTOR, action, name, access_changed=True, via=via, reason=reason
            )
            await db.execute(
                t.users.update().where(t.users.c.name == name).values(disabled=disabled)
            )
            user = await store.load_user(db, name)
            assert user is not None
            return user

        return await self._write(write)

    def _still_fits(self, rule_name: str, roles: frozenset[str]) -> bool:
        rule = self.rule(rule_name)
        return rule is not None and bool(rule.roles & roles)

    async def withdraw_access(self, name: str, reason: str, *, everything: bool) -> Withdrawn:
        """Revoke ``name``'s active grants and cancel their pending requests: all of them
        (``everything``), or those whose rule the user's current roles no longer reach.
        Each is audited with ``reason`` (``grant.revoke``, ``request.cancel``)."""
        reason = clean_text(reason, "reason", required=True)
        now = self.now()

        async def write(db: AsyncSession) -> Withdrawn:
            user = await store.load_user(db, name)
            roles = user.roles if user is not None and not everything else frozenset()
            grants = await store.list_grants(
                db, [t.grants.c.user == name, t.grants.c.revoked_at.is_(None)]
            )
            revoked = []
            for grant in grants:
                if grant.expires_at <= now or self._still_fits(grant.rule, roles):
                    continue
                await self._audit(
                    db,
                    SYSTEM_ACTOR,
                    "grant.revoke",
                    grant.id,
                    access_changed=True,
                    reason=reason,
                    user=grant.user,
                    target=grant.target,
                )
                revoked.append(
                    await store.swap_grant(
                        db, grant, revoked_at=now, revoked_by=SYSTEM_ACTOR, revoke_reason=reason
                    )
                )
            pending = await store.list_requests(
                db,
                [t.requests.c.user == name, t.requests.c.state == RequestState.PENDING.value],
            )
            cancelled = []
            for request in pending:
                if self._still_fits(request.rule, roles):
                    continue
                await self._audit(db, SYSTEM_ACTOR, "request.cancel", request.id, reason=reason)
                cancelled.append(
                    await store.swap_request(
                        db, request, replace(request, state=RequestState.CANCELLED)
                    )
                )
            return Withdrawn(tuple(revoked), tuple(cancelled))

        return await self._write(write)

    async def users_with_live_access(self, names: Iterable[str]) -> set[str]:
        """Which of ``names`` hold an active grant or a pending request."""
        wanted = list(set(names))
        if not wanted:
            return set()
        now = self.now()
        async with self.maker() as db:
            granted = (
                await db.execute(
                    sa.select(t.grants.c.user).where(
                        t.grants.c.user.in_(wanted),
                        t.grants.c.revoked_at.is_(None),
                        t.grants.c.expires_at > now,
                    )
                )
            ).scalars()
            waiting = (
                await db.execute(
                    sa.select(t.requests.c.user).where(
                        t.requests.c.user.in_(wanted),
                        t.requests.c.state == RequestState.PENDING.value,
                    )
                )
            ).scalars()
            return set(granted) | set(waiting)
