"""The policy service's grants: creation from an approved request, revocation, extension."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from policy import store
from policy import tables as t
from policy.durations import format_duration
from policy.errors import AccessDenied, InvalidTransition, NotFound, Refused
from policy.models import (
    ADMIN,
    AUDITOR,
    AccessRequest,
    Grant,
    RequestState,
    Rule,
)
from policy.rules import clean_text
from policy.service.base import REQUEST_TTL, SYSTEM_ACTOR, ServiceBase, _new_id


class GrantsMixin(ServiceBase):
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
                access_changed=True,
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
        reason = clean_text(reason, "reason", required=True)

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
                access_changed=True,
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
            raise Refused(f"at most {format_duration(rule.max_duration)} (rule {rule.name})")
        reason = clean_text(reason, "reason", required=True)
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
