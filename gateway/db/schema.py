"""Every package's tables, and bringing a database to the current schema."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).parent / "migrations"


def all_metadata() -> list[sa.MetaData]:
    from gateway.db.tables import metadata as gateway_tables
    from policy.tables import metadata as policy_tables
    from recorder.tables import metadata as recorder_tables
    from vault.tables import metadata as vault_tables

    return [gateway_tables, policy_tables, vault_tables, recorder_tables]


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _upgrade(connection: Connection, revision: str) -> None:
    cfg = _alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply every pending migration up to ``revision`` (idempotent)."""
    async with engine.connect() as conn:
        await conn.run_sync(_upgrade, revision)
        await conn.commit()
