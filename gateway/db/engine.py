"""Database engine construction shared by every store.

SQLite (the embedded default) gets WAL, foreign keys and ``BEGIN IMMEDIATE`` write
transactions so that two writers never both read a row and then race to update it;
PostgreSQL goes through asyncpg. Stores receive an ``async_sessionmaker`` and never
build engines themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from gateway.errors import UNAVAILABLE

# A dropped connection or an exhausted pool is an outage, answered as 503 at the edges.
UNAVAILABLE.extend([sa_exc.DBAPIError, sa_exc.TimeoutError])

SessionMaker = async_sessionmaker[AsyncSession]
T = TypeVar("T")
SQLITE_POOL = 4
# Execution options of a transaction that only reads: on SQLite it begins deferred, so that
# under WAL it reads a snapshot without waiting for the write lock (a hot-path read, such as
# a web-target cookie, must not queue behind a long write such as an index being saved).
READ_ONLY = {"lockgate_read_only": True}
LOCK_TIMEOUT = 30.0  # seconds a SQLite write waits for another process's lock


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str) -> AsyncEngine:
    """Create an async engine for ``url`` (``sqlite+aiosqlite://`` or ``postgresql+asyncpg://``).

    On SQLite a write waits up to ``?timeout=`` seconds (default 30) for another process's
    write lock before it fails as an outage. Bound values never appear in a database error's
    text (``hide_parameters``): such errors reach logs, and the values can be password
    hashes, token digests or sealed secrets."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # A few pooled connections: a new aiosqlite connection costs a thread and ~4 ms, and
        # with every transaction taking the write lock, waiting in the pool's FIFO is fair
        # where SQLite's sleep-and-retry busy wait starves some writers.
        lock_timeout = float(str(parsed.query.get("timeout", LOCK_TIMEOUT)))
        engine = create_async_engine(
            parsed.difference_update_query(["timeout"]),
            connect_args={"timeout": lock_timeout},
            pool_size=SQLITE_POOL,
            max_overflow=0,
            pool_timeout=30,
            hide_parameters=True,
        )
        _configure_sqlite(engine, lock_timeout)
        return engine
    return create_async_engine(url, pool_pre_ping=True, hide_parameters=True)


def _configure_sqlite(engine: AsyncEngine, lock_timeout: float) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, emit BEGIN so it can be BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(lock_timeout * 1000)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Every transaction takes the write lock up front: read-modify-write sequences
        # (compare-and-swap, audit chain head) then serialize instead of failing late.
        # Only one marked READ_ONLY does not (it must not write: a write could then fail).
        read_only = conn.get_execution_options().get("lockgate_read_only")
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def driver_says(exc: BaseException) -> str:
    """The error's type, and for an ``OperationalError`` (the database's state: ``database is
    locked``, ``disk I/O error``) the driver's own first line. Only then: a driver's message
    about data or a statement may quote a bound value, which ``hide_parameters`` does not
    reach."""
    said = str(getattr(exc, "orig", "") or "").strip().splitlines()
    if not isinstance(exc, sa_exc.OperationalError) or not said:
        return type(exc).__name__
    return f"{type(exc).__name__}: {said[0][:160]}"


def sessionmaker(engine: AsyncEngine) -> SessionMaker:
    return async_sessionmaker(engine, expire_on_commit=False)


async def completed(work: Awaitable[T]) -> T:
    """Await database work to its end even if the caller is cancelled meanwhile; the
    cancellation is then re-raised. Cancelled in the middle of a call, aiosqlite leaves the
    connection open, and with it SQLite's write lock: every later transaction of every
    process then fails with "database is locked" (aiosqlite issue 259)."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result
