"""Session records: the one owner of ``gw_sessions``, for every protocol.

A session's start is audited and recorded before its upstream is used (raising refuses the
session); its end is recorded with the reason and byte counts. The CLI, the HTTP API and
SIEM signals ask for a kill with ``terminate``: it audits the request and publishes a
``terminate`` event in the same transaction, and whichever node holds the session (this one
or another) ends it through its registry.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.audit import AuditLog
from gateway.cluster.bus import publish_terminate
from gateway.db import SessionMaker
from gateway.db.tables import sessions
from gateway.owed import OwedWrites
from policy.errors import AccessDenied, InvalidInput, InvalidTransition, NotFound
from policy.service import SYSTEM_ACTOR, PolicyService


@dataclass(frozen=True)
class SessionRecord:
    id: str
    kind: str
    user: str
    target: str
    account: str
    grant_id: str | None
    node: str
    client_addr: str
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    bytes_up: int
    bytes_down: int

    @property
    def active(self) -> bool:
        return self.ended_at is None


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _record(row: Any) -> SessionRecord:
    return SessionRecord(
        id=row.id,
        kind=row.kind,
        user=row.user,
        target=row.target,
        account=row.account,
        grant_id=row.grant_id,
        node=row.node,
        client_addr=row.client_addr,
        started_at=_utc(row.started_at) or row.started_at,
        ended_at=_utc(row.ended_at),
        end_reason=row.end_reason,
        bytes_up=row.bytes_up or 0,
        bytes_down=row.bytes_down or 0,
    )


RESTARTED = "gateway restarted (the session was cut when the node stopped)"
WORKER_LOST = "worker lost"  # a worker process died; its serve process restarted it
NODE_LOST = "node lost"  # a node fell silent; another one ended its sessions


def new_session_id() -> str:
    return f"se-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class NewSession:
    """What is known of a session when it opens."""

    id: str
    kind: str  # ssh | http
    user: str
    target: str
    account: str
    grant_id: str | None
    client_addr: str
    upstream_account: str | None = None  # the provisioned account it logs in as, if another


class SessionStore:
    def __init__(
        self, maker: SessionMaker, policy: PolicyService, audit: AuditLog, node: str
    ) -> None:
        self.maker = maker
        self.policy = policy
        self.audit = audit
        self.node = node
        self.owed: OwedWrites | None = None  # set by the node: where writes wait for the db

    async def started(self, session: NewSession) -> None:
        """Audit and record the start; raising refuses the session (nothing unaudited runs)."""
        async with self.maker() as db, db.begin():
            await self.audit.append(
                db,
                actor=session.user,
                action="session.start",
                subject=session.id,
                details={
                    "kind": session.kind,
                    "target": session.target,
                    "account": session.account,
                    "grant": session.grant_id,
                    "client": session.client_addr,
                    "node": self.node,
                    **(
                        {"upstream_account": session.upstream_account}
                        if session.upstream_account
                        else {}
                    ),
                },
            )
            await db.execute(
                sessions.insert().values(
                    id=session.id,
                    kind=session.kind,
                    user=session.user,
                    target=session.target,
                    account=session.account,
                    grant_id=session.grant_id,
                    node=self.node,
                    client_addr=session.client_addr,
                    started_at=self.policy.now(),
                    bytes_up=0,
                    bytes_down=0,
                )
            )

    async def operations(
        self, session: NewSession, ops: list[dict[str, Any]], *, prefix: str
    ) -> None:
        """Audit a session's operations (SFTP: which file, which way, how many bytes) in
        order, in one transaction, as ``<prefix>.<op>``. When the database cannot take them
        they are kept in the owed-writes journal, and this still raises: the caller ends the
        session rather than let transfers go on unaudited."""
        payload = {
            "user": session.user,
            "session": session.id,
            "target": session.target,
            "account": session.account,
            "ops": ops,
            "prefix": prefix,
        }
        try:
            await self.write_operations(payload)
        except Exception:
            if self.owed is not None:
                await self.owed.owe("session.ops", payload)
            raise

    async def write_operations(self, payload: Mapping[str, Any]) -> None:
        async with self.maker() as db, db.begin():
            for op in payload["ops"]:
                await self.audit.append(
                    db,
                    actor=str(payload["user"]),
                    action=f"{payload['prefix']}.{op.get('op', 'unknown')}",
                    subject=str(payload["session"]),
                    details={"target": payload["target"], "account": payload["account"], **op},
                )

    async def ended(
        self, session_id: str, user: str, reason: str, bytes_up: int, bytes_down: int
    ) -> None:
        """Audit and record the end. When the database cannot take it (or takes too long),
        the end is kept in the owed-writes journal (``owed``) and written when the database
        is back, with the moment it happened; it is never lost."""
        payload = {
            "session": session_id,
            "user": user,
            "reason": reason,
            "bytes_up": bytes_up,
            "bytes_down": bytes_down,
            "at": self.policy.now().isoformat(),
        }
        if self.owed is None:
            await self.write_end(payload, late=False)
        else:
            await self.owed.write("session.end", payload, now=self._end_now)

    async def _end_now(self, payload: Mapping[str, Any]) -> None:
        await self.write_end(payload, late=False)

    async def write_end(self, payload: Mapping[str, Any], *, late: bool = True) -> None:
        """The end's audit event and row update, once: a replay, or a second attempt while
        the first is still under way, finds it already ended (the row is locked to look)."""
        session_id = str(payload["session"])
        at = datetime.fromisoformat(str(payload["at"]))
        async with self.maker() as db, db.begin():
            ended = (
                await db.execute(
                    sa.select(sessions.c.ended_at)
                    .where(sessions.c.id == session_id)
                    .with_for_update()
                )
            ).first()
            if ended is not None and ended.ended_at is not None:
                return
            details: dict[str, Any] = {
                "reason": payload["reason"],
                "bytes_up": payload["bytes_up"],
                "bytes_down": payload["bytes_down"],
            }
            if late:
                details["ended_at"] = at.isoformat()  # written after a database outage
            await self.audit.append(
                db, actor=str(payload["user"]), action="session.end", subject=session_id,
                details=details,
            )  # fmt: skip
            await db.execute(
                sessions.update()
                .where(sessions.c.id == session_id)
                .values(
                    ended_at=at,
                    end_reason=str(payload["reason"])[:255],
                    bytes_up=int(payload["bytes_up"]),
                    bytes_down=int(payload["bytes_down"]),
                )
            )

    async def sweep_stale(self, owed: Collection[str] = (), reason: str = RESTARTED) -> list[str]:
        """Sessions this node left live when it last stopped (a crash or a kill -9): mark
        them ended and audit each end, with the reason, in the same transaction. Those in
        ``owed`` (their true end waits in the owed-writes journal) are left to it. Returns
        the ids ended (their recordings are still to be sealed)."""
        async with self.maker() as db, db.begin():
            return await self.end_live_of(db, self.node, reason, skip=owed)

    async def end_live_of(
        self,
        db: AsyncSession,
        node: str,
        reason: str,
        by: str | None = None,
        skip: Collection[str] = (),
    ) -> list[str]:
        """Inside ``db``'s transaction: end every session ``node`` holds as live but those in
        ``skip``, each end audited (``by``: the node that found it dead, when another did)."""
        stale = [
            row
            for row in (
                await db.execute(
                    sa.select(sessions.c.id, sessions.c.user, sessions.c.target).where(
                        sessions.c.node == node, sessions.c.ended_at.is_(None)
                    )
                )
            ).all()
            if row.id not in skip
        ]
        for row in stale:
            details = {"reason": reason, "target": row.target, "node": node}
            await self.audit.append(
                db,
                actor=row.user,
                action="session.end",
                subject=row.id,
                details={**details, **({"by": by} if by else {})},
            )
        if stale:
            await db.execute(
                sessions.update()
                .where(sessions.c.id.in_([r.id for r in stale]))
                .values(ended_at=self.policy.now(), end_reason=reason[:255])
            )
        return [r.id for r in stale]

    async def _can_see_all(self, viewer: str) -> bool:
        if viewer == SYSTEM_ACTOR:
            return True
        return (await self.policy.get_user(viewer)).is_auditor

    async def list(
        self,
        viewer: str,
        *,
        active_only: bool = False,
        limit: int = 500,
        after: tuple[datetime, str] | None = None,
    ) -> list[SessionRecord]:
        """Newest first. Requesters see their own sessions; auditors and admins see all.
        ``after`` is the (started_at, id) of the last row of the previous page."""
        query = sa.select(sessions).order_by(sessions.c.started_at.desc(), sessions.c.id.desc())
        if active_only:
            query = query.where(sessions.c.ended_at.is_(None))
        if not await self._can_see_all(viewer):
            query = query.where(sessions.c.user == viewer)
        if after is not None:
            at, sid = after
            query = query.where(
                sa.or_(
                    sessions.c.started_at < at,
                    sa.and_(sessions.c.started_at == at, sessions.c.id < sid),
                )
            )
        async with self.maker() as db:
            return [_record(r) for r in (await db.execute(query.limit(limit))).all()]

    async def get(self, viewer: str, session_id: str) -> SessionRecord:
        async with self.maker() as db:
            row = (await db.execute(sa.select(sessions).where(sessions.c.id == session_id))).first()
        if row is None or (row.user != viewer and not await self._can_see_all(viewer)):
            raise NotFound(f"no session {session_id}")
        return _record(row)

    async def terminate(self, actor: str, session_id: str, reason: str) -> SessionRecord:
        """Admins only. Audited; reaches the node holding the session through the cluster."""
        reason = " ".join(reason.split())
        if not reason:
            raise InvalidInput("a reason is required to terminate a session")
        if actor != SYSTEM_ACTOR and not (await self.policy.get_user(actor)).is_admin:
            raise AccessDenied(f"{actor} may not terminate sessions")
        record = await self.get(SYSTEM_ACTOR, session_id)
        if not record.active:
            raise InvalidTransition(f"session {session_id} has already ended")
        async with self.maker() as db, db.begin():
            await self.audit.append(
                db,
                actor=actor,
                action="session.terminate",
                subject=session_id,
                details={"reason": reason},
            )
            await publish_terminate(db, self.node, session_id, reason, actor, self.policy.now())
        return record
