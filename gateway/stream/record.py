"""What a SIEM gets for one audit event: the event itself, its chain hashes, and the
structured fields a SIEM indexes (actor, action, subject, target, session, grant, source
address, outcome), filled in from the event's details and, for a session's events, from the
session's own row."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from gateway.db import SessionMaker
from gateway.db.tables import audit_events, audit_head, sessions

_FAILURES = ("auth.failure",)
_FAILURE_SUFFIXES = (".failure", ".failed", ".refused", ".error")


@dataclass(frozen=True)
class StreamRecord:
    seq: int
    at: datetime
    node: str
    actor: str
    action: str
    subject: str
    target: str
    session: str
    grant: str
    source: str  # the client's address, when the event has one
    outcome: str  # success | failure
    details: Mapping[str, Any]
    hash: str
    prev_hash: str

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at.isoformat().replace("+00:00", "Z"),
            "node": self.node,
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "target": self.target,
            "session": self.session,
            "grant": self.grant,
            "source": self.source,
            "outcome": self.outcome,
            "details": dict(self.details),
            "hash": self.hash,
            "prev_hash": self.prev_hash,
        }


def outcome(action: str, details: Mapping[str, Any]) -> str:
    if action in _FAILURES or action.endswith(_FAILURE_SUFFIXES) or details.get("error"):
        return "failure"
    return "success"


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def head_seq(maker: SessionMaker) -> int:
    async with maker() as db:
        return int((await db.execute(sa.select(audit_head.c.seq))).scalar_one())


async def load_records(maker: SessionMaker, after: int, limit: int) -> list[StreamRecord]:
    """The committed events after sequence number ``after``, oldest first, at most ``limit``.

    Appends serialize on the chain head and hold it until they commit, so sequence order is
    commit order: an event numbered below one already read can never appear later."""
    async with maker() as db:
        rows: Sequence[Any] = (
            await db.execute(
                sa.select(audit_events)
                .where(audit_events.c.seq > after)
                .order_by(audit_events.c.seq)
                .limit(limit)
            )
        ).all()
        ids = {r.subject for r in rows if r.subject.startswith("se-")}
        facts: dict[str, Any] = {}
        if ids:
            found = await db.execute(
                sa.select(
                    sessions.c.id, sessions.c.target, sessions.c.grant_id, sessions.c.client_addr
                ).where(sessions.c.id.in_(ids))
            )
            facts = {f.id: f for f in found}
    return [_record(row, facts.get(row.subject)) for row in rows]


def _record(row: Any, session: Any) -> StreamRecord:
    details: dict[str, Any] = json.loads(row.details)
    action: str = row.action
    subject: str = row.subject
    target = _text(details.get("target"))
    grant = _text(details.get("grant"))
    source = _text(details.get("client")) or _text(details.get("addr"))
    if session is not None:
        target = target or session.target
        grant = grant or (session.grant_id or "")
        source = source or session.client_addr
    if action.startswith("grant.") or subject.startswith("gr-"):
        grant = grant or subject
    if action.startswith("target."):
        target = target or subject
    return StreamRecord(
        seq=int(row.seq),
        at=_utc(row.at),
        node=row.node,
        actor=row.actor,
        action=action,
        subject=subject,
        target=target,
        session=subject if session is not None or subject.startswith("se-") else "",
        grant=grant,
        source=source,
        outcome=outcome(action, details),
        details=details,
        hash=row.hash,
        prev_hash=row.prev_hash,
    )
