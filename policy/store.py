"""Persistence of the access model: rows to values and back, compare-and-swap updates.

Functions take an open ``AsyncSession`` so the service decides the transaction (and writes
the audit event in it). No rule logic here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from policy import tables as t
from policy.errors import ConcurrentUpdate
from policy.models import (
    AccessRequest,
    ApiToken,
    Approval,
    Grant,
    Lock,
    RequestState,
    Target,
    User,
)


def utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


# --- users --------------------------------------------------------------------------


async def user_row(db: AsyncSession, name: str) -> Any:
    return (await db.execute(sa.select(t.users).where(t.users.c.name == name))).first()


async def user_keys(db: AsyncSession, user_ids: Sequence[str]) -> dict[str, list[str]]:
    rows = (
        await db.execute(
            sa.select(t.user_keys)
            .where(t.user_keys.c.user_id.in_(user_ids))
            .order_by(t.user_keys.c.id)
        )
    ).all()
    keys: dict[str, list[str]] = {}
    for row in rows:
        keys.setdefault(row.user_id, []).append(row.public_key)
    return keys


def to_user(row: Any, keys: Sequence[str]) -> User:
    return User(
        id=row.id,
        name=row.name,
        roles=frozenset(json.loads(row.roles)),
        public_keys=tuple(keys),
        has_password=row.password_hash is not None,
        totp_enabled=bool(row.totp_enabled),
        disabled=bool(row.disabled),
        created_at=utc(row.created_at),
    )


async def load_user(db: AsyncSession, name: str) -> User | None:
    row = await user_row(db, name)
    if row is None:
        return None
    return to_user(row, (await user_keys(db, [row.id])).get(row.id, []))


async def list_users(db: AsyncSession) -> list[User]:
    rows = (await db.execute(sa.select(t.users).order_by(t.users.c.name))).all()
    keys = await user_keys(db, [r.id for r in rows])
    return [to_user(r, keys.get(r.id, [])) for r in rows]


# --- targets ------------------------------------------------------------------------


def to_target(row: Any) -> Target:
    return Target(
        id=row.id,
        name=row.name,
        kind=row.kind,
        host=row.host,
        port=row.port,
        host_key=row.host_key,
        url=row.url,
        tls_verify=bool(row.tls_verify),
        labels=json.loads(row.labels),
        accounts=tuple(json.loads(row.accounts)),
        default_account=row.default_account,
        created_at=utc(row.created_at),
        tls_ca=row.tls_ca,
        tls_fingerprint=row.tls_fingerprint,
        preserve_host=bool(row.preserve_host),
        sensitive_params=tuple(json.loads(row.sensitive_params or "[]")),
        record_bodies=int(row.record_bodies or 0),
        provision=row.provision or "none",
        uid_min=int(row.uid_min),
        uid_max=int(row.uid_max),
        home_archive=row.home_archive or "",
    )


async def load_target(db: AsyncSession, name: str) -> Target | None:
    row = (await db.execute(sa.select(t.targets).where(t.targets.c.name == name))).first()
    return None if row is None else to_target(row)


async def list_targets(db: AsyncSession) -> list[Target]:
    rows = (await db.execute(sa.select(t.targets).order_by(t.targets.c.name))).all()
    return [to_target(r) for r in rows]


# --- requests -----------------------------------------------------------------------


def _approvals_json(approvals: Sequence[Approval]) -> str:
    return json.dumps(
        [
            {
                "approver": a.approver,
                "decision": a.decision,
                "comment": a.comment,
                "at": a.at.isoformat(),
            }
            for a in approvals
        ]
    )


def to_request(row: Any) -> AccessRequest:
    approvals = tuple(
        Approval(a["approver"], a["decision"], a["comment"], datetime.fromisoformat(a["at"]))
        for a in json.loads(row.approvals)
    )
    return AccessRequest(
        id=row.id,
        user=row.user,
        target=row.target,
        account=row.account,
        duration=timedelta(seconds=row.duration_s),
        reason=row.reason,
        ticket=row.ticket,
        ticket_summary=row.ticket_summary,
        rule=row.rule,
        state=RequestState(row.state),
        created_at=utc(row.created_at),
        expires_at=utc(row.expires_at),
        approvals=approvals,
        grant_id=row.grant_id,
        extends_grant=row.extends_grant,
        break_glass=bool(row.break_glass),
        version=row.version,
    )


def _request_values(r: AccessRequest) -> dict[str, Any]:
    return {
        "user": r.user,
        "target": r.target,
        "account": r.account,
        "duration_s": int(r.duration.total_seconds()),
        "reason": r.reason,
        "ticket": r.ticket,
        "ticket_summary": r.ticket_summary,
        "rule": r.rule,
        "state": r.state.value,
        "created_at": r.created_at,
        "expires_at": r.expires_at,
        "approvals": _approvals_json(r.approvals),
        "grant_id": r.grant_id,
        "extends_grant": r.extends_grant,
        "break_glass": r.break_glass,
    }


async def insert_request(db: AsyncSession, r: AccessRequest) -> None:
    await db.execute(t.requests.insert().values(id=r.id, version=r.version, **_request_values(r)))


async def swap_request(db: AsyncSession, old: AccessRequest, new: AccessRequest) -> AccessRequest:
    """Write ``new`` only if the row still has ``old``'s version, else ConcurrentUpdate."""
    result = await db.execute(
        t.requests.update()
        .where(t.requests.c.id == old.id, t.requests.c.version == old.version)
        .values(version=old.version + 1, **_request_values(new))
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ConcurrentUpdate(f"request {old.id} changed concurrently")
    from dataclasses import replace

    return replace(new, version=old.version + 1)


async def load_request(db: AsyncSession, request_id: str) -> AccessRequest | None:
    row = (await db.execute(sa.select(t.requests).where(t.requests.c.id == request_id))).first()
    return None if row is None else to_request(row)


async def list_requests(db: AsyncSession, where: Sequence[Any] = ()) -> list[AccessRequest]:
    query = sa.select(t.requests).where(*where).order_by(t.requests.c.created_at.desc())
    return [to_request(r) for r in (await db.execute(query)).all()]


# --- grants -------------------------------------------------------------------------


def to_grant(row: Any) -> Grant:
    return Grant(
        id=row.id,
        user=row.user,
        target=row.target,
        account=row.account,
        not_before=utc(row.not_before),
        expires_at=utc(row.expires_at),
        request_id=row.request_id,
        rule=row.rule,
        created_at=utc(row.created_at),
        revoked_at=utc_or_none(row.revoked_at),
        revoked_by=row.revoked_by,
        revoke_reason=row.revoke_reason,
        break_glass=bool(row.break_glass),
        version=row.version,
    )


async def insert_grant(db: AsyncSession, g: Grant) -> None:
    await db.execute(
        t.grants.insert().values(
            id=g.id,
            user=g.user,
            target=g.target,
            account=g.account,
            not_before=g.not_before,
            expires_at=g.expires_at,
            request_id=g.request_id,
            rule=g.rule,
            created_at=g.created_at,
            revoked_at=None,
            revoked_by=None,
            revoke_reason=None,
            break_glass=g.break_glass,
            version=g.version,
        )
    )


async def swap_grant(db: AsyncSession, old: Grant, **values: Any) -> Grant:
    result = await db.execute(
        t.grants.update()
        .where(t.grants.c.id == old.id, t.grants.c.version == old.version)
        .values(version=old.version + 1, **values)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ConcurrentUpdate(f"grant {old.id} changed concurrently")
    row = (await db.execute(sa.select(t.grants).where(t.grants.c.id == old.id))).one()
    return to_grant(row)


async def load_grant(db: AsyncSession, grant_id: str) -> Grant | None:
    row = (await db.execute(sa.select(t.grants).where(t.grants.c.id == grant_id))).first()
    return None if row is None else to_grant(row)


async def list_grants(db: AsyncSession, where: Sequence[Any] = ()) -> list[Grant]:
    query = sa.select(t.grants).where(*where).order_by(t.grants.c.created_at.desc())
    return [to_grant(r) for r in (await db.execute(query)).all()]


# --- locks --------------------------------------------------------------------------


def to_lock(row: Any) -> Lock:
    return Lock(
        id=row.id,
        kind=row.kind,
        name=row.name,
        reason=row.reason,
        created_by=row.created_by,
        created_at=utc(row.created_at),
        expires_at=utc_or_none(row.expires_at),
        lifted_at=utc_or_none(row.lifted_at),
        lifted_by=row.lifted_by,
    )


async def open_locks(db: AsyncSession, names: Sequence[str] | None = None) -> list[Lock]:
    query = sa.select(t.locks).where(t.locks.c.lifted_at.is_(None)).order_by(t.locks.c.created_at)
    if names is not None:
        query = query.where(t.locks.c.name.in_(names))
    return [to_lock(r) for r in (await db.execute(query)).all()]


# --- tokens -------------------------------------------------------------------------


def to_token(row: Any) -> ApiToken:
    return ApiToken(
        id=row.id,
        user=row.user,
        created_at=utc(row.created_at),
        expires_at=utc_or_none(row.expires_at),
        revoked=bool(row.revoked),
    )
