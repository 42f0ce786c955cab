"""The Alembic history builds exactly the tables the packages declare, and is re-runnable."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.schema import all_metadata, upgrade
from gateway.db.tables import audit_head


def _merged() -> sa.MetaData:
    merged = sa.MetaData()
    for md in all_metadata():
        for table in md.tables.values():
            table.to_metadata(merged)
    return merged


def _diff(connection: sa.Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    diffs = compare_metadata(context, _merged())
    # Tables a migration makes with raw SQL (full-text indexes) are not in any MetaData.
    return [
        d
        for d in diffs
        if not (
            isinstance(d, tuple)
            and d[0] in ("remove_table", "remove_index")
            and ("fts" in d[1].name or d[1].name == "alembic_version")
        )
    ]


async def test_upgrade_matches_metadata_and_is_idempotent(engine: AsyncEngine) -> None:
    await upgrade(engine)
    await upgrade(engine)  # a second run is a no-op
    async with engine.connect() as conn:
        diffs = await conn.run_sync(_diff)
        head = (await conn.execute(sa.select(audit_head))).first()
    assert diffs == []
    assert head is not None and head.seq == 0
