"""The Alembic history builds exactly the tables the packages declare, and is re-runnable."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import sessionmaker
from gateway.db.schema import _alembic_config, all_metadata, upgrade
from gateway.db.tables import SCHEMA_REVISION, audit_head
from gateway.errors import StartupError
from gateway.services import check_database
from recorder.indexer import IndexResult
from recorder.store import RecordingStore


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


async def test_an_index_from_before_generations_stays_searchable(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """Rows indexed before 0013 are the recording's index after it, and rows written after
    it reach the full-text index (on SQLite the columns are added in place, so its
    triggers stay)."""
    await upgrade(engine, "0012")
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO rec_recordings (session_id, path, started_at, width, height, "
                "duration, size, meta, indexed_to, sha256) VALUES "
                "('se-old', 'se-old.rec', :at, 80, 24, 1.0, 10, '{}', 10, :sha)"
            ),
            {"at": datetime.now(UTC), "sha": "0" * 64},
        )
        await conn.execute(
            sa.text(
                "INSERT INTO rec_text (session_id, t, kind, line) "
                "VALUES ('se-old', 0.5, 'command', 'systemctl stop nginx')"
            )
        )
    await upgrade(engine)
    store = RecordingStore(tmp_path, sessionmaker(engine))
    assert [h.line for h in await store.search("stop nginx")] == ["systemctl stop nginx"]
    again = IndexResult(80, 24, 1.0, [], [(0.7, "command", "journalctl -u nginx")], [], 0, 10)
    assert await store.saves.sealed("se-old", again, 10)
    assert [h.line for h in await store.search("journalctl")] == ["journalctl -u nginx"]
    assert await store.search("stop nginx") == []
    await store.aclose()


async def test_a_node_refuses_a_schema_older_than_its_release_and_says_what_to_run(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """A database left at the previous release's schema once let a node start and answer
    503 to every web target (its sign-ins write a column the table lacked)."""
    script = ScriptDirectory.from_config(_alembic_config())
    assert script.get_current_head() == SCHEMA_REVISION  # the constant follows the history
    previous = script.get_revision(SCHEMA_REVISION).down_revision
    assert isinstance(previous, str)
    await upgrade(engine, revision=previous)
    with pytest.raises(StartupError) as refused:
        await check_database(engine)
    assert str(refused.value) == (
        f"the database schema is at {previous}; this release needs {SCHEMA_REVISION}: "
        "run: lockgate db upgrade"
    )
    await upgrade(engine)
    await check_database(engine)
    newer = f"{int(SCHEMA_REVISION) + 1:04d}"  # a rolling upgrade: a newer release migrated
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": newer})
    await check_database(engine)
    assert f"schema is at {newer}, newer than this release's" in caplog.text
