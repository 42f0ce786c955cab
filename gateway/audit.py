"""The audit log: append-only, every event hash-chained to the one before it.

Appends happen inside the caller's transaction and lock the single chain-head row, so
concurrent writers (on one node or many) serialize and the chain never forks. If an append
fails, the caller's transaction fails with it: no audit, no action.

Each event's hash is SHA-256 over the previous hash and the event's canonical JSON, so
``verify`` detects an edited, deleted, inserted or reordered row, and a truncated tail (the
head row remembers the last sequence number and hash).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.cluster.bus import publish_recheck
from gateway.db import SessionMaker, driver_says
from gateway.db.tables import audit_events, audit_head, owed_applied
from gateway.errors import AuditError
from policy.models import Clock, utcnow

GENESIS = "0" * 64
OWED_KIND = "audit.event"  # the owed-writes journal's kind for an event written late
OWE_AFTER = 5.0  # seconds an append may take before its event is owed (a database that hangs)
log = logging.getLogger(__name__)
Owe = Callable[[str, Mapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class AuditEvent:
    seq: int
    at: datetime
    node: str
    actor: str
    action: str
    subject: str
    details: Mapping[str, Any]


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int
    first_bad: int | None  # sequence number where the chain first breaks
    problem: str


def _canonical(
    seq: int, at: datetime, node: str, actor: str, action: str, subject: str, details: str
) -> bytes:
    record = [seq, at.astimezone(UTC).isoformat(), node, actor, action, subject, details]
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


def _chain(prev_hash: str, canonical: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical).hexdigest()


def _details_json(details: Mapping[str, Any] | None) -> str:
    # No default= hook: a value that is not plain JSON (a Secret, bytes, an object) refuses to
    # serialize, so nothing opaque, and no secret, can slip into the log.
    try:
        return json.dumps(
            dict(details or {}), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
    except (TypeError, ValueError) as exc:
        raise AuditError(f"audit details must be plain JSON values: {type(exc).__name__}") from None


def _retrieved(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # a late failure is already owed


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class AuditLog:
    """Implements the ``AuditWriter`` port of ``policy`` and ``vault``."""

    def __init__(self, maker: SessionMaker, node: str, clock: Clock = utcnow) -> None:
        self.maker = maker
        self.node = node
        self.clock = clock
        # set by the node: where ``record_or_owe`` keeps an event the database cannot take
        self.owe: Owe | None = None

    async def append(
        self,
        db: AsyncSession,
        *,
        actor: str,
        action: str,
        subject: str,
        details: Mapping[str, Any] | None = None,
        access_changed: bool = False,
    ) -> None:
        """Append one event inside ``db``'s transaction; raises AuditError on any failure.
        With ``access_changed`` a cluster re-check is published in the same transaction."""
        payload = _details_json(details)
        try:
            head = (
                await db.execute(
                    sa.select(audit_head.c.seq, audit_head.c.hash)
                    .where(audit_head.c.id == 1)
                    .with_for_update()
                )
            ).first()
            if head is None:
                raise AuditError("the audit log is not initialised (run: lockgate db upgrade)")
            seq, prev = int(head.seq) + 1, str(head.hash)
            at = _as_utc(self.clock())
            digest = _chain(prev, _canonical(seq, at, self.node, actor, action, subject, payload))
            await db.execute(
                audit_events.insert().values(
                    seq=seq,
                    at=at,
                    node=self.node,
                    actor=actor,
                    action=action,
                    subject=subject,
                    details=payload,
                    prev_hash=prev,
                    hash=digest,
                )
            )
            await db.execute(
                audit_head.update().where(audit_head.c.id == 1).values(seq=seq, hash=digest)
            )
            if access_changed:
                await publish_recheck(db, self.node, action, subject, at)
        except AuditError:
            raise
        except Exception as exc:  # any database failure means: no audit, no action
            raise AuditError(f"the audit log could not be written ({driver_says(exc)})") from exc

    async def record(
        self, *, actor: str, action: str, subject: str, details: Mapping[str, Any] | None = None
    ) -> None:
        """Append one event in a transaction of its own."""
        try:
            async with self.maker() as db, db.begin():
                await self.append(db, actor=actor, action=action, subject=subject, details=details)
        except AuditError:
            raise
        except Exception as exc:
            raise AuditError(f"the audit log could not be written ({driver_says(exc)})") from exc

    async def record_or_owe(
        self, *, actor: str, action: str, subject: str, details: Mapping[str, Any] | None = None
    ) -> bool:
        """Append one event for something that has already happened (a refusal, a failure,
        a stop), which must not be lost when the database cannot take it: if the append
        fails, or has not finished within ``OWE_AFTER`` seconds, the event is kept in the
        owed-writes journal and written later by ``write_owed`` with ``details.happened_at``.
        At least once: an append that hung and then landed after all leaves the event twice.
        Never raises; True if written now."""
        at = _as_utc(self.clock()).isoformat()
        attempt = asyncio.ensure_future(
            self.record(actor=actor, action=action, subject=subject, details=details)
        )
        attempt.add_done_callback(_retrieved)
        try:
            async with asyncio.timeout(OWE_AFTER):
                await asyncio.shield(attempt)
            return True
        except Exception as exc:  # AuditError, or the timeout
            failure = str(exc) or type(exc).__name__
        if self.owe is None:
            log.warning("audit event %s lost: %s", action, failure)
            return False
        payload = {
            "id": str(uuid.uuid4()),
            "actor": actor,
            "action": action,
            "subject": subject,
            "details": dict(details or {}),
            "at": at,
        }
        try:
            await self.owe(OWED_KIND, payload)
        except Exception as exc:
            log.warning("audit event %s could be neither written nor kept: %s", action, exc)
        return False

    async def write_owed(self, payload: Mapping[str, Any]) -> None:
        """Write an event ``record_or_owe`` kept; a second replay of the same one is a no-op."""
        event_id = str(payload["id"])
        async with self.maker() as db, db.begin():
            done = (
                await db.execute(sa.select(owed_applied.c.id).where(owed_applied.c.id == event_id))
            ).first()
            if done is not None:
                return
            await db.execute(
                owed_applied.insert().values(id=event_id, applied_at=_as_utc(self.clock()))
            )
            await self.append(
                db,
                actor=str(payload["actor"]),
                action=str(payload["action"]),
                subject=str(payload["subject"]),
                details={**(payload.get("details") or {}), "happened_at": payload["at"]},
            )

    async def events(
        self, *, since: datetime | None = None, limit: int | None = None
    ) -> list[AuditEvent]:
        query = sa.select(audit_events).order_by(audit_events.c.seq)
        if since is not None:
            query = query.where(audit_events.c.at >= since)
        if limit is not None:
            query = query.limit(limit)
        async with self.maker() as db:
            rows = (await db.execute(query)).all()
        return [
            AuditEvent(
                seq=r.seq,
                at=_as_utc(r.at),
                node=r.node,
                actor=r.actor,
                action=r.action,
                subject=r.subject,
                details=json.loads(r.details),
            )
            for r in rows
        ]

    async def page(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        subject: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> tuple[list[AuditEvent], int | None]:
        """Newest first, filtered in the query (``action`` matches a prefix: ``request.``);
        ``before`` is the sequence number the previous page ended at. Returns the page and
        the next ``before`` (None on the last page)."""
        query = sa.select(audit_events).order_by(audit_events.c.seq.desc())
        if actor:
            query = query.where(audit_events.c.actor == actor)
        if action:
            escaped = action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(audit_events.c.action.like(f"{escaped}%", escape="\\"))
        if subject:
            query = query.where(audit_events.c.subject == subject)
        if since is not None:
            query = query.where(audit_events.c.at >= since)
        if until is not None:
            query = query.where(audit_events.c.at < until)
        if before is not None:
            query = query.where(audit_events.c.seq < before)
        async with self.maker() as db:
            rows = (await db.execute(query.limit(limit + 1))).all()
        events = [
            AuditEvent(
                seq=r.seq,
                at=_as_utc(r.at),
                node=r.node,
                actor=r.actor,
                action=r.action,
                subject=r.subject,
                details=json.loads(r.details),
            )
            for r in rows[:limit]
        ]
        return events, events[-1].seq if len(rows) > limit and events else None

    async def verify(self) -> VerifyResult:
        """Walk the whole chain; report the first sequence number where it breaks."""
        async with self.maker() as db:
            head = (await db.execute(sa.select(audit_head).where(audit_head.c.id == 1))).first()
            rows: Sequence[Any] = (
                await db.execute(sa.select(audit_events).order_by(audit_events.c.seq))
            ).all()
        if head is None:
            return VerifyResult(False, 0, None, "the audit log is not initialised")
        prev, expected = GENESIS, 1
        for row in rows:
            if row.seq != expected:
                return VerifyResult(False, len(rows), expected, f"event {expected} is missing")
            if row.prev_hash != prev:
                return VerifyResult(False, len(rows), row.seq, f"event {row.seq} is out of chain")
            canonical = _canonical(
                row.seq, _as_utc(row.at), row.node, row.actor, row.action, row.subject, row.details
            )
            if _chain(prev, canonical) != row.hash:
                return VerifyResult(False, len(rows), row.seq, f"event {row.seq} was altered")
            prev, expected = row.hash, expected + 1
        if head.seq != expected - 1 or head.hash != prev:
            return VerifyResult(
                False, len(rows), expected, "the log was truncated after its last event"
            )
        return VerifyResult(True, len(rows), None, "ok")


async def init_chain(db: AsyncSession) -> None:
    """Create the chain head if it is missing (idempotent; run by migrations and tests)."""
    exists = (await db.execute(sa.select(audit_head.c.id).where(audit_head.c.id == 1))).first()
    if exists is None:
        await db.execute(audit_head.insert().values(id=1, seq=0, hash=GENESIS))
