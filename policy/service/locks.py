"""The policy service's locks on users and targets."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from policy import store
from policy import tables as t
from policy.errors import InvalidInput, NotFound
from policy.models import (
    ADMIN,
    AUDITOR,
    Lock,
    LockKind,
)
from policy.rules import clean_text, may_approve
from policy.service.base import ServiceBase, _new_id


class LocksMixin(ServiceBase):
    # --- locks -----------------------------------------------------------------
    async def lock(
        self, actor: str, kind: LockKind, name: str, reason: str, duration: timedelta | None = None
    ) -> Lock:
        if kind not in ("user", "target"):
            raise InvalidInput("lock kind must be user or target")
        reason = clean_text(reason, "reason", required=True)
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
                access_changed=True,
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

    async def visible_locks(self, viewer: str) -> list[Lock]:
        """The active locks ``viewer`` may see. Admins and auditors see all. Anyone else sees
        the locks on themself and, as an approver, the locks on the people and targets of the
        pending requests they may decide (what the decision needs); never the rest, since a
        lock's reason and author may be sensitive (a SIEM's finding about someone)."""
        now = self.now()
        async with self.maker() as db:
            roles = await self._roles(db, viewer)
            live = [lk for lk in await store.open_locks(db) if lk.is_active(now)]
            if ADMIN in roles or AUDITOR in roles:
                return live
            pending = await store.list_requests(
                db, [t.requests.c.state == "pending", t.requests.c.expires_at > now]
            )
        users, targets = {viewer}, set()
        for request in pending:
            rule = self.rule(request.rule)
            if request.user != viewer and rule is not None and may_approve(rule, roles):
                users.add(request.user)
                targets.add(request.target)
        return [
            lk
            for lk in live
            if (lk.kind == "user" and lk.name in users)
            or (lk.kind == "target" and lk.name in targets)
        ]
