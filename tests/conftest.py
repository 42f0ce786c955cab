"""Shared fixtures: a database per test on SQLite and, when LOCKGATE_TEST_DATABASE_URL is
set, on PostgreSQL too (each test in a fresh database).

The engine is a plain SQLAlchemy one (tests/libdb.py), so the library tests run without the
gateway; tests/gateway/conftest.py swaps in the gateway's production engine."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.libdb import EngineFactory, SessionMaker, create_engine, fresh_database, sessionmaker
from tests.target import sshd  # noqa: F401  (the session-wide SSH target fixture)

PG_URL = os.environ.get("LOCKGATE_TEST_DATABASE_URL", "")
DB_KINDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


@pytest.fixture
def engine_factory() -> EngineFactory:
    """How ``engine`` builds its engine from a URL."""
    return create_engine


@pytest.fixture(params=DB_KINDS)
async def engine(
    request: pytest.FixtureRequest, tmp_path: Path, engine_factory: EngineFactory
) -> AsyncIterator[AsyncEngine]:
    """An empty database: a fresh SQLite file, or a fresh PostgreSQL database."""
    async with fresh_database(request.param, tmp_path, PG_URL, engine_factory) as eng:
        yield eng


@pytest.fixture
def db_url(engine: AsyncEngine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def maker(engine: AsyncEngine) -> SessionMaker:
    return sessionmaker(engine)
