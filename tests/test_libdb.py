"""The library tests' database helpers: the engine's SQLite set-up and the audit log."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.libdb import AuditLog, SessionMaker, audit_events, create_engine


@pytest.fixture
async def audit(engine: AsyncEngine, maker: SessionMaker) -> AuditLog:
    return await AuditLog.create(engine, maker)


async def test_sqlite_engine_has_wal_and_foreign_keys(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'pragmas.db'}")
    try:
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
    finally:
        await engine.dispose()


async def test_events_are_numbered_in_order_and_verify(
    audit: AuditLog, maker: SessionMaker
) -> None:
    async with maker() as db, db.begin():
        await audit.append(db, actor="a", action="x.one", subject="s", details={"k": 1})
        await audit.append(db, actor="a", action="x.two", subject="s")
    events = await audit.events()
    assert [(e.seq, e.action, dict(e.details)) for e in events] == [
        (1, "x.one", {"k": 1}),
        (2, "x.two", {}),
    ]
    assert (await audit.verify()).ok


async def test_an_append_rolls_back_with_its_callers_transaction(
    audit: AuditLog, maker: SessionMaker
) -> None:
    with pytest.raises(RuntimeError, match="the action failed"):
        async with maker() as db, db.begin():
            await audit.append(db, actor="a", action="x.one", subject="s")
            raise RuntimeError("the action failed")
    assert await audit.events() == []
    result = await audit.verify()
    assert result.ok and result.count == 0


async def test_details_that_are_not_plain_json_fail_the_append(
    audit: AuditLog, maker: SessionMaker
) -> None:
    with pytest.raises(TypeError):
        async with maker() as db, db.begin():
            await audit.append(db, actor="a", action="x", subject="s", details={"v": object()})
    assert await audit.events() == []


async def test_verify_finds_a_missing_event(audit: AuditLog, maker: SessionMaker) -> None:
    async with maker() as db, db.begin():
        for action in ("x.one", "x.two", "x.three"):
            await audit.append(db, actor="a", action=action, subject="s")
    async with maker() as db, db.begin():
        await db.execute(sa.delete(audit_events).where(audit_events.c.seq == 2))
    result = await audit.verify()
    assert not result.ok and result.problem == "a gap in the sequence"
