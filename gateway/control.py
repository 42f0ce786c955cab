"""Session records and the cluster-wide kill request.

The CLI, the HTTP API and SIEM signals call ``terminate`` here; it audits the request and
publishes a ``terminate`` event in the same transaction. Whichever node holds the session
(this one or another) receives the event and ends it through its registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from gateway.audit import AuditLog
from gateway.cluster import publish
from gateway.db import SessionMaker
from gateway.tables import sessions
from policy.errors import AccessDenied, InvalidInput, NotFound
from policy.service import SYSTEM_ACTOR, PolicyService

TERMINATE = "terminate"
RECHECK = "recheck"


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


class SessionControl:
    def __init__(
        self, maker: SessionMaker, policy: PolicyService, audit: AuditLog, node: str
    ) -> None:
        self.maker = maker
        self.policy = policy
        self.audit = audit
        self.node = node

    async def _can_see_all(self, viewer: str) -> bool:
        if viewer == SYSTEM_ACTOR:
            return True
        return (await self.policy.get_user(viewer)).is_auditor

    async def list(
        self, viewer: str, *, active_only: bool = False, limit: int = 500
    ) -> list[SessionRecord]:
        """Newest first. Requesters see their own sessions; auditors and admins see all."""
        query = sa.select(sessions).order_by(sessions.c.started_at.desc()).limit(limit)
        if active_only:
            query = query.where(sessions.c.ended_at.is_(None))
        if not await self._can_see_all(viewer):
            query = query.where(sessions.c.user == viewer)
        async with self.maker() as db:
            return [_record(r) for r in (await db.execute(query)).all()]

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
            from policy.errors import InvalidTransition

            raise InvalidTransition(f"session {session_id} has already ended")
        async with self.maker() as db, db.begin():
            await self.audit.append(
                db,
                actor=actor,
                action="session.terminate",
                subject=session_id,
                details={"reason": reason},
            )
            await publish(
                db,
                self.node,
                TERMINATE,
                {"session": session_id, "reason": reason, "by": actor},
                self.policy.now(),
            )
        return record
