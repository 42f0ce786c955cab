"""The table of provisioned things (``prov_items``) and the UID allocator (``prov_uids``).

Each state change is one conditional UPDATE (it applies only from the states it names, so
two nodes cannot both move a row) in the same transaction as its audit event. UIDs are
taken in order from the target's range and their rows are never deleted: a UID is handed
out at most once per target, whatever happened to the account that had it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.audit import AuditLog
from gateway.db import SessionMaker
from gateway.db.tables import prov_items, prov_uids
from policy.models import Target

State = Literal["creating", "active", "revoking", "removed", "failed"]
Kind = Literal["account", "elevation"]
LIVE: tuple[str, ...] = ("creating", "active", "revoking")
ACTOR = "lockgate"


class UidRangeExhausted(Exception):
    pass


@dataclass(frozen=True)
class Item:
    id: str
    target: str
    kind: Kind
    account: str
    uid: int | None
    grant_id: str
    user: str
    groups: tuple[str, ...]
    sudo: tuple[str, ...]
    added_groups: tuple[str, ...]  # elevation: the groups the account was not in before
    state: State
    reason: str | None
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    owner: str | None
    created_at: datetime
    activated_at: datetime | None
    updated_at: datetime

    @property
    def subject(self) -> str:
        return f"{self.account}@{self.target}"

    def public(self) -> dict[str, Any]:
        """What the CLI, API and web page show."""
        return {
            "id": self.id,
            "target": self.target,
            "kind": self.kind,
            "account": self.account,
            "uid": self.uid,
            "grant": self.grant_id,
            "user": self.user,
            "groups": list(self.groups),
            "sudo": list(self.sudo),
            "added_groups": list(self.added_groups),
            "state": self.state,
            "reason": self.reason,
            "attempts": self.attempts,
            "next_attempt_at": _iso(self.next_attempt_at),
            "last_error": self.last_error,
            "created_at": _iso(self.created_at),
            "activated_at": _iso(self.activated_at),
            "updated_at": _iso(self.updated_at),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _item(row: Any) -> Item:
    created = _utc(row.created_at)
    updated = _utc(row.updated_at)
    assert created is not None and updated is not None
    return Item(
        id=row.id,
        target=row.target,
        kind=row.kind,
        account=row.account,
        uid=row.uid,
        grant_id=row.grant_id,
        user=row.user,
        groups=tuple(json.loads(row.groups)),
        sudo=tuple(json.loads(row.sudo)),
        added_groups=tuple(json.loads(row.added_groups)),
        state=row.state,
        reason=row.reason,
        attempts=row.attempts,
        next_attempt_at=_utc(row.next_attempt_at),
        last_error=row.last_error,
        owner=row.owner,
        created_at=created,
        activated_at=_utc(row.activated_at),
        updated_at=updated,
    )


def live_key(target: str, kind: str, account: str, grant_id: str) -> str:
    return f"{target}/{kind}/{account}/{grant_id}"


class ProvisionStore:
    def __init__(self, maker: SessionMaker, audit: AuditLog) -> None:
        self.maker = maker
        self.audit = audit

    async def get(self, item_id: str) -> Item | None:
        async with self.maker() as db:
            query = sa.select(prov_items).where(prov_items.c.id == item_id)
            row = (await db.execute(query)).first()
        return None if row is None else _item(row)

    async def live(self, target: str, kind: str, account: str, grant_id: str) -> Item | None:
        key = live_key(target, kind, account, grant_id)
        async with self.maker() as db:
            row = (
                await db.execute(sa.select(prov_items).where(prov_items.c.live_key == key))
            ).first()
        return None if row is None else _item(row)

    async def list(
        self, *, target: str | None = None, states: Sequence[str] | None = None
    ) -> list[Item]:
        query = sa.select(prov_items).order_by(prov_items.c.created_at, prov_items.c.id)
        if target is not None:
            query = query.where(prov_items.c.target == target)
        if states is not None:
            query = query.where(prov_items.c.state.in_(list(states)))
        async with self.maker() as db:
            return [_item(r) for r in (await db.execute(query)).all()]

    async def _next_uid(self, db: AsyncSession, target: Target) -> int:
        top = (
            await db.execute(
                sa.select(sa.func.max(prov_uids.c.uid)).where(prov_uids.c.target == target.name)
            )
        ).scalar()
        uid = target.uid_min if top is None else max(target.uid_min, int(top) + 1)
        if uid > target.uid_max:
            raise UidRangeExhausted(
                f"the UID range {target.uid_min}-{target.uid_max} of {target.name} is used up"
            )
        return uid

    async def create(
        self,
        target: Target,
        kind: Kind,
        account: str,
        grant_id: str,
        user: str,
        groups: Sequence[str],
        sudo: Sequence[str],
        *,
        owner: str,
        now: datetime,
    ) -> tuple[Item, bool]:
        """The live row for this thing, created in state ``creating`` (with a fresh UID for
        an account) unless one exists. Returns (row, created)."""
        for _ in range(20):  # another node may take the same next UID at the same moment
            existing = await self.live(target.name, kind, account, grant_id)
            if existing is not None:
                return existing, False
            item_id = f"pv-{secrets.token_hex(6)}"
            try:
                async with self.maker() as db, db.begin():
                    uid = None
                    if kind == "account":
                        uid = await self._next_uid(db, target)
                        await db.execute(
                            prov_uids.insert().values(
                                target=target.name, uid=uid, item_id=item_id, at=now
                            )
                        )
                    await self.audit.append(
                        db,
                        actor=ACTOR,
                        action="provision.creating",
                        subject=f"{account}@{target.name}",
                        details={
                            "item": item_id,
                            "kind": kind,
                            "grant": grant_id,
                            "user": user,
                            "uid": uid,
                            "groups": list(groups),
                            "sudo": list(sudo),
                        },
                    )
                    await db.execute(
                        prov_items.insert().values(
                            id=item_id,
                            target=target.name,
                            kind=kind,
                            account=account,
                            uid=uid,
                            grant_id=grant_id,
                            user=user,
                            groups=json.dumps(list(groups)),
                            sudo=json.dumps(list(sudo)),
                            added_groups="[]",
                            state="creating",
                            attempts=0,
                            owner=owner,
                            live_key=live_key(target.name, kind, account, grant_id),
                            created_at=now,
                            updated_at=now,
                        )
                    )
            except IntegrityError:
                continue
            item = await self.get(item_id)
            assert item is not None
            return item, True
        raise RuntimeError("could not record the provisioned item (contention)")

    async def adopt(
        self, target: str, account: str, uid: int | None, now: datetime, found: str
    ) -> Item | None:
        """Record an account found on the target that no live row explains (drift) straight
        in state ``revoking``, so the reconciler removes it like any other; audited as
        ``provision.drift``. None if a row for it appeared meanwhile."""
        item_id = f"pv-{secrets.token_hex(6)}"
        try:
            async with self.maker() as db, db.begin():
                await self.audit.append(
                    db,
                    actor=ACTOR,
                    action="provision.drift",
                    subject=f"{account}@{target}",
                    details={"item": item_id, "uid": uid, "found": found},
                )
                await db.execute(
                    prov_items.insert().values(
                        id=item_id,
                        target=target,
                        kind="account",
                        account=account,
                        uid=uid,
                        grant_id="",
                        user="",
                        groups="[]",
                        sudo="[]",
                        added_groups="[]",
                        state="revoking",
                        reason=f"drift: {found}"[:255],
                        attempts=0,
                        live_key=live_key(target, "account", account, "drift"),
                        created_at=now,
                        activated_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError:
            return None
        return await self.get(item_id)

    async def new_uid(self, item: Item, target: Target, now: datetime, why: str) -> Item:
        """Give the item the next UID: the one it had is taken on the target by an account
        Lockgate does not manage (it stays recorded, so it is never tried again)."""
        for _ in range(20):
            try:
                async with self.maker() as db, db.begin():
                    uid = await self._next_uid(db, target)
                    await db.execute(
                        prov_uids.insert().values(
                            target=target.name, uid=uid, item_id=item.id, at=now
                        )
                    )
                    await self.audit.append(
                        db,
                        actor=ACTOR,
                        action="provision.uid_taken",
                        subject=item.subject,
                        details={"item": item.id, "uid": item.uid, "next": uid, "why": why},
                    )
                    await db.execute(
                        prov_items.update()
                        .where(prov_items.c.id == item.id)
                        .values(uid=uid, updated_at=now)
                    )
            except IntegrityError:
                continue
            fresh = await self.get(item.id)
            assert fresh is not None
            return fresh
        raise RuntimeError("could not allocate a UID (contention)")

    async def move(
        self,
        item: Item,
        to: State,
        *,
        now: datetime,
        from_states: Sequence[str],
        reason: str | None = None,
        error: str | None = None,
        owner: str | None = None,
    ) -> Item | None:
        """``item`` into state ``to`` if it is still in one of ``from_states``; audited as
        ``provision.<to>``. None when another node moved it first."""
        values: dict[str, Any] = {"state": to, "updated_at": now, "next_attempt_at": None}
        if to == "active":
            values["activated_at"] = now
        if to in ("removed", "failed"):
            values["live_key"] = None
        if to == "revoking":
            values["attempts"] = 0
        if reason is not None:
            values["reason"] = reason[:255]
        if error is not None:
            values["last_error"] = error[:2000]
        if owner is not None:
            values["owner"] = owner
        async with self.maker() as db, db.begin():
            done = await db.execute(
                prov_items.update()
                .where(prov_items.c.id == item.id, prov_items.c.state.in_(list(from_states)))
                .values(**values)
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                return None
            details: dict[str, Any] = {
                "item": item.id,
                "kind": item.kind,
                "grant": item.grant_id,
                "user": item.user,
                "uid": item.uid,
                "from": item.state,
            }
            if reason:
                details["reason"] = reason
            if error:
                details["error"] = error
            await self.audit.append(
                db, actor=ACTOR, action=f"provision.{to}", subject=item.subject, details=details
            )
        return await self.get(item.id)

    async def set_added_groups(self, item: Item, groups: Sequence[str], now: datetime) -> None:
        """Record the groups an elevation adds (before adding them: a crash in between
        then removes a membership that was never added, which is harmless)."""
        async with self.maker() as db, db.begin():
            await db.execute(
                prov_items.update()
                .where(prov_items.c.id == item.id)
                .values(added_groups=json.dumps(sorted(set(groups))), updated_at=now)
            )

    async def claim(self, item: Item, *, now: datetime, until: datetime, owner: str) -> bool:
        """Take the next attempt on ``item`` (a lease until ``until``): only one node works
        on a row at a time, and a node that dies mid-attempt lets the lease run out."""
        async with self.maker() as db, db.begin():
            done = await db.execute(
                prov_items.update()
                .where(
                    prov_items.c.id == item.id,
                    prov_items.c.state == item.state,
                    sa.or_(
                        prov_items.c.next_attempt_at.is_(None),
                        prov_items.c.next_attempt_at <= now,
                    ),
                )
                .values(next_attempt_at=until, owner=owner)
            )
        return bool(done.rowcount)  # type: ignore[attr-defined]

    async def attempt_failed(
        self, item: Item, *, now: datetime, retry_at: datetime, error: str
    ) -> None:
        """Count a failed attempt and when to try again; audited (``provision.retry``), so an
        unreachable target shows in the audit log, not only in metrics."""
        async with self.maker() as db, db.begin():
            await db.execute(
                prov_items.update()
                .where(prov_items.c.id == item.id)
                .values(
                    attempts=prov_items.c.attempts + 1,
                    last_error=error[:2000],
                    next_attempt_at=retry_at,
                    updated_at=now,
                )
            )
            await self.audit.append(
                db,
                actor=ACTOR,
                action="provision.retry",
                subject=item.subject,
                details={
                    "item": item.id,
                    "state": item.state,
                    "attempt": item.attempts + 1,
                    "error": error,
                    "retry_at": retry_at.isoformat(),
                },
            )
