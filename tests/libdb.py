"""A database for the library tests without the gateway: a plain SQLAlchemy engine, each
library's own tables, and a small real audit log implementing the libraries' audit port.

The engine gets what the stores rely on, as the gateway's does: on SQLite WAL, foreign keys,
a busy timeout and ``BEGIN IMMEDIATE`` (every transaction takes the write lock up front, so
concurrent read-modify-write sequences serialize instead of failing late), and bound values
kept out of error text. Nothing here imports ``gateway``; ``tests/test_layering.py`` checks.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.pool import NullPool

SessionMaker = async_sessionmaker[AsyncSession]
EngineFactory = Callable[[str], AsyncEngine]


def create_engine(url: str) -> AsyncEngine:
    """An engine on ``url`` (``sqlite+aiosqlite://`` or ``postgresql+asyncpg://``)."""
    if make_url(url).get_backend_name() != "sqlite":
        return _create_async_engine(url, hide_parameters=True)
    engine = _create_async_engine(
        url,
        connect_args={"timeout": 30},
        pool_size=4,
        max_overflow=0,
        pool_timeout=30,
        hide_parameters=True,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy, not the driver, emits BEGIN
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "busy_timeout=30000"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def sessionmaker(engine: AsyncEngine) -> SessionMaker:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def fresh_database(
    kind: str, tmp_path: Path, pg_url: str, factory: EngineFactory = create_engine
) -> AsyncIterator[AsyncEngine]:
    """An engine (built by ``factory``) on an empty database: a new SQLite file, or a new
    PostgreSQL database on ``pg_url``'s server, dropped afterwards."""
    if kind == "sqlite":
        engine = factory(f"sqlite+aiosqlite:///{tmp_path / 'test.db'}")
        try:
            yield engine
        finally:
            await engine.dispose()
        return
    name = f"lg_{uuid.uuid4().hex[:12]}"
    admin = _create_async_engine(pg_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    async with admin.connect() as conn:
        await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = factory(make_url(pg_url).set(database=name).render_as_string(hide_password=False))
    try:
        yield engine
    finally:
        await engine.dispose()
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        await admin.dispose()


async def create_tables(engine: AsyncEngine, *metadata: sa.MetaData) -> None:
    async with engine.begin() as conn:
        for tables in metadata:
            await conn.run_sync(tables.create_all)


async def create_recorder_schema(engine: AsyncEngine) -> None:
    """The recorder's tables and, on SQLite, the FTS5 index its search reads (the gateway's
    first migration creates the same; PostgreSQL searches with to_tsvector, no table)."""
    from recorder.tables import metadata

    await create_tables(engine, metadata)
    if engine.dialect.name != "sqlite":
        return
    async with engine.begin() as conn:
        for ddl in (
            "CREATE VIRTUAL TABLE rec_text_fts USING fts5("
            "line, content='rec_text', content_rowid='id', tokenize='unicode61')",
            "CREATE TRIGGER rec_text_fts_ai AFTER INSERT ON rec_text BEGIN "
            "INSERT INTO rec_text_fts(rowid, line) VALUES (new.id, new.line); END",
            "CREATE TRIGGER rec_text_fts_ad AFTER DELETE ON rec_text BEGIN "
            "INSERT INTO rec_text_fts(rec_text_fts, rowid, line) "
            "VALUES ('delete', old.id, old.line); END",
        ):
            await conn.exec_driver_sql(ddl)


# --- the audit port ---------------------------------------------------------------------

audit_metadata = sa.MetaData()
audit_events = sa.Table(
    "test_audit_events",
    audit_metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("details", sa.Text, nullable=False),
)
audit_head = sa.Table(
    "test_audit_head",
    audit_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", sa.Integer, nullable=False),
)


@dataclass(frozen=True)
class AuditEvent:
    seq: int
    actor: str
    action: str
    subject: str
    details: Mapping[str, Any]


@dataclass(frozen=True)
class Verified:
    ok: bool
    count: int
    problem: str


class AuditLog:
    """The library tests' implementation of the ``AuditWriter`` port of policy and vault.

    Each append numbers its event after the last one, under a lock on the single head row,
    inside the caller's transaction: a rolled-back action leaves no event, and ``verify``
    finds the sequence 1..n with no gap and the head at n. Details must be plain JSON (no
    ``default=`` hook), so an opaque value such as a Secret fails the append, and the action."""

    def __init__(self, maker: SessionMaker) -> None:
        self.maker = maker

    @classmethod
    async def create(cls, engine: AsyncEngine, maker: SessionMaker) -> AuditLog:
        """Create the audit tables and the head row on ``engine``'s database."""
        await create_tables(engine, audit_metadata)
        async with maker() as db, db.begin():
            await db.execute(audit_head.insert().values(id=1, seq=0))
        return cls(maker)

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
        payload = json.dumps(dict(details or {}), sort_keys=True)
        head = (
            await db.execute(
                sa.select(audit_head.c.seq).where(audit_head.c.id == 1).with_for_update()
            )
        ).scalar_one()
        seq = int(head) + 1
        await db.execute(
            audit_events.insert().values(
                seq=seq, actor=actor, action=action, subject=subject, details=payload
            )
        )
        await db.execute(audit_head.update().where(audit_head.c.id == 1).values(seq=seq))

    async def events(self) -> list[AuditEvent]:
        async with self.maker() as db:
            rows = (await db.execute(sa.select(audit_events).order_by(audit_events.c.seq))).all()
        return [
            AuditEvent(r.seq, r.actor, r.action, r.subject, json.loads(r.details)) for r in rows
        ]

    async def verify(self) -> Verified:
        async with self.maker() as db:
            head = (await db.execute(sa.select(audit_head.c.seq))).scalar_one()
            seqs: Sequence[int] = (
                (await db.execute(sa.select(audit_events.c.seq).order_by(audit_events.c.seq)))
                .scalars()
                .all()
            )
        if list(seqs) != list(range(1, len(seqs) + 1)):
            return Verified(False, len(seqs), "a gap in the sequence")
        if head != len(seqs):
            return Verified(False, len(seqs), f"the head is at {head}, not {len(seqs)}")
        return Verified(True, len(seqs), "ok")


class FailingAudit:
    """An audit port whose writes always fail: nothing may happen without an audit event."""

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
        raise RuntimeError("audit store unavailable")
