"""Refusals are audited, at most a burst per minute per (actor, action, client); the rest
are counted on the next event written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import AuditLog, init_chain
from gateway.db import SessionMaker
from gateway.db.tables import metadata
from gateway.refusals import BURST, RefusalLog


async def _mallory(log: RefusalLog) -> None:
    await log.refused(
        actor="mallory", action="session.refused", subject="x", reason="no grant",
        client="203.0.113.9",
    )  # fmt: skip


async def test_a_flood_of_refusals_is_audited_in_bursts_with_a_count(
    engine: AsyncEngine, maker: SessionMaker
) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    async with maker() as db, db.begin():
        await init_chain(db)
    now = [datetime(2026, 3, 1, tzinfo=UTC)]
    audit = AuditLog(maker, node="n1", clock=lambda: now[0])
    log = RefusalLog(audit, lambda: now[0])
    for _ in range(BURST + 5):
        await _mallory(log)
    await log.refused(actor="alice", action="session.refused", subject="y", reason="locked")
    events = [e for e in await audit.events() if e.action == "session.refused"]
    assert [e.actor for e in events].count("mallory") == BURST
    assert [e.actor for e in events].count("alice") == 1
    now[0] += timedelta(minutes=1)
    await _mallory(log)
    last = [e for e in await audit.events() if e.action == "session.refused"][-1]
    assert last.details["suppressed"] == 5 and last.details["client"] == "203.0.113.9"
    assert (await audit.verify()).ok
