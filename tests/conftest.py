"""Shared fixtures: a database per test on SQLite and, when LOCKGATE_TEST_DATABASE_URL is
set, on PostgreSQL too (each test in a fresh database)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from gateway.db import SessionMaker, create_engine, sessionmaker
from tests.target import sshd  # noqa: F401  (the session-wide SSH target fixture)

PG_URL = os.environ.get("LOCKGATE_TEST_DATABASE_URL", "")
DB_KINDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


@pytest.fixture(params=DB_KINDS)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An empty database: a fresh SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        eng = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'test.db'}")
        yield eng
        await eng.dispose()
        return
    name = f"lg_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    eng = create_engine(make_url(PG_URL).set(database=name).render_as_string(hide_password=False))
    try:
        yield eng
    finally:
        await eng.dispose()
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest.fixture
def db_url(engine: AsyncEngine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def maker(engine: AsyncEngine) -> SessionMaker:
    return sessionmaker(engine)
