"""Saving an index in the database: a live pass's rows added to the recording's, and a
sealed recording's whole index written as a new generation and switched to at once.

Both write in transactions of at most ``SAVE_BATCH`` rows with a pause between them: an
HTTP session's index holds a row or two per request, and no other write (an SSH login, an
audit event, a web session's re-check) may wait behind all of it.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from recorder.errors import NotFound
from recorder.indexer import IndexResult
from recorder.rows import SAVE_BATCH, IndexFile, rows_of
from recorder.tables import events, keyframes, recordings, text_lines

# A pause between batches: a writer waiting in SQLite's busy handler (which sleeps between
# tries) gets the lock instead of losing every race to the next batch.
SAVE_PAUSE = 0.02


def current(table: sa.Table) -> sa.ColumnElement[bool]:
    """The row is of its recording's current index (see ``IndexSaves.sealed``)."""
    generation = sa.select(recordings.c.index_generation).where(
        recordings.c.session_id == table.c.session_id
    )
    return table.c.generation == generation.scalar_subquery()


def _a_batch(table: sa.Table, *where: sa.ColumnElement[bool]) -> sa.Delete:
    """Delete at most ``SAVE_BATCH`` of the rows ``where`` says, passing over rows another
    transaction holds: two saves clearing the same rows at once (a winner clearing the older
    generations, the loser its own) deadlocked on PostgreSQL; now each deletes what the
    other has not taken. (SQLite has one writer at a time and no row locks.)"""
    some = sa.select(table.c.id).where(*where).limit(SAVE_BATCH).with_for_update(skip_locked=True)
    return table.delete().where(table.c.id.in_(some.scalar_subquery()))


class IndexSaves:
    def __init__(self, maker: async_sessionmaker[AsyncSession]) -> None:
        self.maker = maker
        self._closing = False  # saves stop at their next batch
        self._save_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def close(self) -> None:
        """Saves under way stop at their next batch."""
        self._closing = True

    async def sealed(self, session_id: str, result: IndexResult | IndexFile, size: int) -> bool:
        """Replace a sealed recording's index with ``result``, as a new generation: its rows
        go in transactions of at most ``SAVE_BATCH`` rows, ``SAVE_PAUSE`` apart, then one
        short transaction switches the recording to them, then the older generations' rows
        are deleted in batches. Readers see the old index whole until the switch and the new
        one whole after it; no other write waits behind more than one batch.

        Any node may index a sealed recording: of two saves at once the one that began last
        wins (both read the same sealed file), and the other deletes its own rows. True when
        this save's index is the recording's; False when it lost, or stopped at a batch
        because the store is closing (the store's ``index_pending`` redoes it). A save cut off by a
        crash leaves rows no reader sees; the recording's next save deletes them."""
        generation = await self._next_generation(session_id)
        for table, rows in rows_of(result, session_id, generation):
            if self._closing:
                return False
            async with self.maker() as db, db.begin():
                await db.execute(table.insert(), rows)
            await asyncio.sleep(SAVE_PAUSE)
        async with self.maker() as db, db.begin():
            current = (
                await db.execute(
                    sa.select(recordings.c.index_generation)
                    .where(recordings.c.session_id == session_id)
                    .with_for_update()
                )
            ).scalar()
            won = current is not None and current < generation
            if won:
                await db.execute(
                    recordings.update()
                    .where(recordings.c.session_id == session_id)
                    .values(index_generation=generation, indexed_to=size)
                )
        for table in (keyframes, text_lines, events):
            old = table.c.generation < generation if won else table.c.generation == generation
            await self.clear(table, session_id, old)
        return won

    async def clear(self, table: sa.Table, session_id: str, which: sa.ColumnElement[bool]) -> None:
        """Delete the recording's rows of ``table`` that ``which`` says, ``SAVE_BATCH`` per
        transaction, ``SAVE_PAUSE`` apart, until none are left or the store closes."""
        while not self._closing:
            async with self.maker() as db, db.begin():
                gone = await db.execute(_a_batch(table, table.c.session_id == session_id, which))
            if gone.rowcount < SAVE_BATCH:  # type: ignore[attr-defined]
                return
            await asyncio.sleep(SAVE_PAUSE)

    async def _next_generation(self, session_id: str) -> int:
        """A generation number no other save of the recording has (``index_next``, raised);
        raises NotFound for no such recording."""
        where = recordings.c.session_id == session_id
        async with self.maker() as db, db.begin():
            await db.execute(
                recordings.update().where(where).values(index_next=recordings.c.index_next + 1)
            )
            generation = (
                await db.execute(sa.select(recordings.c.index_next).where(where))
            ).scalar()
        if generation is None:
            raise NotFound(f"no recording for session {session_id}")
        return int(generation)

    async def live(self, session_id: str, result: IndexResult | IndexFile, fresh: bool) -> bool:
        """Add a live pass's rows (only the node writing the recording makes them), after
        deleting the older ones when ``fresh``; False once the recording is sealed.

        Each batch first checks that the recording is still unsealed. Meanwhile a search
        of the live session may find part of the pass's rows."""
        lock = self._save_locks.get(session_id)
        if lock is None:
            lock = self._save_locks[session_id] = asyncio.Lock()
        async with lock:  # one live pass of a session at a time
            for table in (keyframes, text_lines, events) if fresh else ():
                while True:
                    gone = await self._live_batch(session_id, table, None)
                    if gone is None:
                        return False
                    if gone < SAVE_BATCH:
                        break
                    await asyncio.sleep(SAVE_PAUSE)
            for table, rows in rows_of(result, session_id):
                if await self._live_batch(session_id, table, rows) is None:
                    return False
                await asyncio.sleep(SAVE_PAUSE)
            async with self.maker() as db, db.begin():
                if await self._sealed(db, session_id):
                    return False
                await self._indexed_to(db, session_id, result.size)
        return True

    async def _live_batch(
        self, session_id: str, table: sa.Table, rows: list[dict[str, Any]] | None
    ) -> int | None:
        """Insert ``rows``, or with None delete up to ``SAVE_BATCH`` of the session's old
        rows, in a transaction of its own; how many rows, or None once the recording is
        sealed (its own index replaces whatever a live pass left)."""
        async with self.maker() as db, db.begin():
            if await self._sealed(db, session_id):
                return None
            if rows is not None:
                await db.execute(table.insert(), rows)
                return len(rows)
            gone = await db.execute(_a_batch(table, table.c.session_id == session_id))
            return int(gone.rowcount)  # type: ignore[attr-defined]

    @staticmethod
    async def _sealed(db: AsyncSession, session_id: str) -> bool:
        found = await db.execute(
            sa.select(recordings.c.sha256)
            .where(recordings.c.session_id == session_id)
            .with_for_update()
        )
        return found.scalar() is not None

    @staticmethod
    async def _indexed_to(db: AsyncSession, session_id: str, size: int) -> None:
        await db.execute(
            recordings.update().where(recordings.c.session_id == session_id).values(indexed_to=size)
        )
