"""The audit chain: appends, verification, tamper detection, fail-closed appends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import AuditLog, init_chain
from gateway.db import SessionMaker
from gateway.db.tables import audit_events, audit_head, metadata
from gateway.errors import AuditError


@pytest.fixture
async def audit(engine: AsyncEngine, maker: SessionMaker) -> AuditLog:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    async with maker() as db, db.begin():
        await init_chain(db)
    return AuditLog(maker, node="test-node")


async def _fill(audit: AuditLog, n: int) -> None:
    for i in range(n):
        await audit.record(actor="alice", action="test.event", subject=f"s{i}", details={"i": i})


async def test_appends_chain_and_verify(audit: AuditLog) -> None:
    await _fill(audit, 5)
    events = await audit.events()
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert events[2].details == {"i": 2}
    assert events[0].at.tzinfo is not None
    result = await audit.verify()
    assert result.ok and result.count == 5, result


async def test_concurrent_appends_never_fork(audit: AuditLog) -> None:
    await asyncio.gather(
        *(audit.record(actor="bob", action="test.concurrent", subject=str(i)) for i in range(20))
    )
    result = await audit.verify()
    assert result.ok and result.count == 20, result


@pytest.mark.parametrize(
    ("tamper", "first_bad"),
    [
        (audit_events.update().where(audit_events.c.seq == 3).values(subject="forged"), 3),
        (audit_events.update().where(audit_events.c.seq == 2).values(actor="mallory"), 2),
        (audit_events.delete().where(audit_events.c.seq == 4), 4),
        (audit_events.delete().where(audit_events.c.seq == 6), 6),  # truncated tail
    ],
)
async def test_verify_detects_tampering(
    audit: AuditLog, maker: SessionMaker, tamper: sa.Executable, first_bad: int
) -> None:
    await _fill(audit, 6)
    async with maker() as db, db.begin():
        await db.execute(tamper)
    result = await audit.verify()
    assert not result.ok
    assert result.first_bad == first_bad


async def test_verify_detects_reordering(audit: AuditLog, maker: SessionMaker) -> None:
    await _fill(audit, 4)
    async with maker() as db, db.begin():
        rows = {r.seq: r for r in (await db.execute(sa.select(audit_events))).all()}
        for a, b in ((2, 3), (3, 2)):  # swap the content of events 2 and 3
            await db.execute(
                audit_events.update()
                .where(audit_events.c.seq == a)
                .values(
                    subject=rows[b].subject,
                    details=rows[b].details,
                    hash=rows[b].hash,
                    prev_hash=rows[b].prev_hash,
                )
            )
    result = await audit.verify()
    assert not result.ok and result.first_bad == 2


async def test_secret_like_values_refused(audit: AuditLog) -> None:
    from vault.secret import Secret

    with pytest.raises(AuditError) as info:
        await audit.record(actor="a", action="x", subject="y", details={"pw": Secret("hunter2")})
    assert "hunter2" not in str(info.value)
    assert (await audit.verify()).count == 0


async def test_append_fails_closed_without_chain_head(audit: AuditLog, maker: SessionMaker) -> None:
    async with maker() as db, db.begin():
        await db.execute(audit_head.delete())
    with pytest.raises(AuditError):
        await audit.record(actor="a", action="x", subject="y")


async def test_append_rolls_back_with_caller(audit: AuditLog, maker: SessionMaker) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with maker() as db, db.begin():
            await audit.append(db, actor="a", action="x", subject="y")
            raise Boom
    assert (await audit.events()) == []
    assert (await audit.verify()).ok


async def test_since_filter(maker: SessionMaker, audit: AuditLog) -> None:
    clock_value = [datetime(2026, 1, 1, tzinfo=UTC)]
    timed = AuditLog(maker, node="n", clock=lambda: clock_value[0])
    await timed.record(actor="a", action="old", subject="s")
    clock_value[0] = datetime(2026, 6, 1, tzinfo=UTC)
    await timed.record(actor="a", action="new", subject="s")
    recent = await timed.events(since=datetime(2026, 3, 1, tzinfo=UTC))
    assert [e.action for e in recent] == ["new"]
    assert (await timed.verify()).ok


async def test_a_recheck_is_published_when_an_event_says_access_changed_whatever_its_name(
    audit: AuditLog, maker: SessionMaker
) -> None:
    from gateway.db.tables import cluster_events

    async with maker() as db, db.begin():
        await audit.append(db, actor="ada", action="grant.revoke", subject="gr-1")
        await audit.append(
            db, actor="ada", action="renamed.action", subject="gr-2", access_changed=True
        )
    async with maker() as db:
        rows = (await db.execute(sa.select(cluster_events))).all()
    assert [(r.kind, r.payload) for r in rows] == [
        ("recheck", '{"action": "renamed.action", "subject": "gr-2"}')
    ]
