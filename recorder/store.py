"""Recordings in the database: index results, search, keyframes, verification.

Indexing runs in a child process (``python -m recorder.indexer``), so pyte never shares a
core with the gateway's event loop; the loop only writes the results.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from recorder.errors import NotFound
from recorder.indexer import IndexResult
from recorder.integrity import verify_against_seal, verify_file
from recorder.rows import IndexFile
from recorder.saves import IndexSaves, current
from recorder.slots import HostSlots
from recorder.tables import events, keyframes, recordings, text_lines

log = logging.getLogger(__name__)
# Index processes at once: a burst of sessions ending together must not start one pyte
# process each (about 30 MB and a core apiece); the rest wait their turn.
INDEX_WORKERS = max(1, (os.cpu_count() or 2) // 2)


@dataclass(frozen=True)
class Hit:
    session_id: str
    t: float
    kind: str
    line: str


@dataclass(frozen=True)
class RecordingInfo:
    session_id: str
    path: Path
    started_at: datetime
    ended_at: datetime | None
    duration: float
    width: int
    height: int
    size: int
    sealed: bool
    meta: dict[str, Any]
    end_reason: str | None
    indexed: bool  # sealed, and the index covers all of it


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class RecordingStore:
    def __init__(
        self,
        root: Path,
        maker: async_sessionmaker[AsyncSession],
        workers: int = INDEX_WORKERS,
        *,
        host_slots: HostSlots | None = None,
    ) -> None:
        self.root = root
        self.maker = maker
        self._workers = asyncio.Semaphore(workers)
        # Shared by the processes of a host (the workers of one serve): their bound together.
        self._host_slots = host_slots
        self._children: set[asyncio.subprocess.Process] = set()
        self._jobs: set[asyncio.Task[None]] = set()
        self._saves: set[asyncio.Future[bool]] = set()
        self.saves = IndexSaves(maker)

    def _info(self, row: Any) -> RecordingInfo:
        return RecordingInfo(
            row.session_id,
            self.root / row.path,
            _utc(row.started_at) or row.started_at,
            _utc(row.ended_at),
            float(row.duration or 0.0),
            row.width,
            row.height,
            int(row.size or 0),
            row.sha256 is not None,
            json.loads(row.meta),
            row.end_reason,
            row.sha256 is not None and row.indexed_to >= (row.size or 0) > 0,
        )

    async def get(self, session_id: str) -> RecordingInfo:
        async with self.maker() as db:
            row = (
                await db.execute(sa.select(recordings).where(recordings.c.session_id == session_id))
            ).first()
        if row is None:
            raise NotFound(f"no recording for session {session_id}")
        return self._info(row)

    async def recent(self, limit: int = 200) -> list[RecordingInfo]:
        return (await self.page(limit=limit))[0]

    async def page(
        self,
        *,
        user: str | None = None,
        target: str | None = None,
        limit: int = 100,
        after: tuple[datetime, str] | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> tuple[list[RecordingInfo], tuple[datetime, str] | None]:
        """Newest first, filtered in the query (``kind``: ``ssh`` or ``http``; started in
        ``[since, until)``); ``after`` is the (started_at, session_id) of the last row of
        the previous page. Returns the page and the next ``after`` (None on the last page)."""
        query = sa.select(recordings)
        if user is not None:
            query = query.where(recordings.c.user == user)
        if target is not None:
            query = query.where(recordings.c.target == target)
        if kind is not None:  # the writer's header: json.dumps with its default separators
            query = query.where(recordings.c.meta.like(f'%"kind": "{kind}"%'))
        if since is not None:
            query = query.where(recordings.c.started_at >= since)
        if until is not None:
            query = query.where(recordings.c.started_at < until)
        if after is not None:
            at, sid = after
            query = query.where(
                sa.or_(
                    recordings.c.started_at < at,
                    sa.and_(recordings.c.started_at == at, recordings.c.session_id < sid),
                )
            )
        query = query.order_by(
            recordings.c.started_at.desc(), recordings.c.session_id.desc()
        ).limit(limit + 1)
        async with self.maker() as db:
            rows = (await db.execute(query)).all()
        infos = [self._info(r) for r in rows[:limit]]
        more = len(rows) > limit and infos
        return infos, (infos[-1].started_at, infos[-1].session_id) if more else None

    async def first_commands(self, session_ids: list[str], per: int = 2) -> dict[str, list[str]]:
        """The first ``per`` command lines of each recording (its index's), for a listing."""
        if not session_ids:
            return {}
        query = (
            sa.select(text_lines.c.session_id, text_lines.c.line)
            .where(
                text_lines.c.session_id.in_(session_ids),
                text_lines.c.kind == "command",
                current(text_lines),
            )
            .order_by(text_lines.c.session_id, text_lines.c.t, text_lines.c.id)
        )
        found: dict[str, list[str]] = {}
        async with self.maker() as db:
            for sid, line in (await db.execute(query)).all():
                lines = found.setdefault(sid, [])
                if len(lines) < per:
                    lines.append(line)
        return found

    # --- indexing --------------------------------------------------------------------
    def index_later(self, session_id: str) -> None:
        """Queue indexing of a sealed recording in the worker process."""
        task = asyncio.ensure_future(self._index_logged(session_id))
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _index_logged(self, session_id: str) -> None:
        try:
            await self.index(session_id)
        except Exception:
            log.exception("indexing recording %s failed", session_id)

    async def index(self, session_id: str) -> IndexResult:
        """Index a sealed recording whole and replace its index. In a child process (pyte
        never runs in this one), at most ``workers`` at once; killed at shutdown. Returns
        the index's facts (its entries are in the database)."""
        info = await self.get(session_id)
        index = await self._child(session_id, str(info.path))
        await self._saved(self.saves.sealed(session_id, index, info.size), index)
        return index.head

    async def index_live(
        self, session_id: str, resume: dict[str, Any] | None, max_bytes: int
    ) -> IndexResult | None:
        """Go on indexing a recording still being written, from where the pass that gave
        ``resume`` stopped (None: from its start), over at most about ``max_bytes`` of its
        complete chunks, and add the rows found. The result (the pass's facts) has the
        ``resume`` for the next pass; None if the recording was sealed meanwhile (its own
        index is complete).

        With ``resume`` None, the rows of earlier passes are deleted first: a pass that
        failed part way may have saved some, and a later one never adds them twice."""
        info = await self.get(session_id)
        state = json.dumps(resume).encode()
        index = await self._child(session_id, str(info.path), "--more", str(max_bytes), stdin=state)
        saving = self.saves.live(session_id, index, fresh=resume is None)
        return index.head if await self._saved(saving, index) else None

    async def _child(self, session_id: str, *argv: str, stdin: bytes = b"") -> IndexFile:
        """The worker's index, in a file of its own next to the recordings (unnamed: it
        goes when closed)."""
        async with self._workers, self._host_slot():
            out = tempfile.TemporaryFile(dir=self.root)  # noqa: SIM115 (closed after the save)
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "recorder.indexer",
                    *argv,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=out,
                    stderr=asyncio.subprocess.PIPE,
                )
                self._children.add(proc)
                try:
                    _, err = await proc.communicate(stdin)
                except BaseException:  # cancelled: the child must not outlive its reader
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    # Reaped before the cancel goes on: a child left to the garbage collector
                    # closes its pipes on a loop that may have closed by then.
                    with contextlib.suppress(Exception):
                        await asyncio.shield(proc.wait())
                    raise
                finally:
                    self._children.discard(proc)
                if proc.returncode != 0:
                    raise RuntimeError(
                        f"indexing {session_id} failed: "
                        f"{err.decode(errors='replace').strip()[-300:]}"
                    )
                return IndexFile(out)
            except BaseException:
                out.close()
                raise

    async def _saved(self, saving: Coroutine[Any, Any, bool], index: IndexFile) -> bool:
        # A cancel in the middle of a database call leaves the connection unusable (and, on
        # SQLite, its write lock held): the save runs to its end, and aclose waits for it.
        # The index's file is closed when the save ends, not when its caller is cancelled.
        save = asyncio.ensure_future(saving)
        self._saves.add(save)
        save.add_done_callback(self._saves.discard)
        save.add_done_callback(lambda _: index.close())
        return await asyncio.shield(save)

    def _host_slot(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._host_slots.slot() if self._host_slots else contextlib.nullcontext()

    async def index_pending(self) -> int:
        """Queue every sealed recording not fully indexed (e.g. after a restart)."""
        async with self.maker() as db:
            rows = (
                await db.execute(
                    sa.select(recordings.c.session_id).where(
                        recordings.c.sha256.is_not(None),
                        recordings.c.indexed_to < recordings.c.size,
                    )
                )
            ).all()
        for row in rows:
            self.index_later(row.session_id)
        return len(rows)

    async def index_lag(self, now: datetime) -> float:
        """Seconds since the oldest sealed recording still waiting for its index ended."""
        async with self.maker() as db:
            oldest = (
                await db.execute(
                    sa.select(sa.func.min(recordings.c.ended_at)).where(
                        recordings.c.sha256.is_not(None),
                        recordings.c.indexed_to < recordings.c.size,
                    )
                )
            ).scalar()
        ended = _utc(oldest)
        return max(0.0, (now - ended).total_seconds()) if ended is not None else 0.0

    async def aclose(self) -> None:
        """Stop: indexing children are killed and their jobs dropped (redone by
        ``index_pending`` next start); an index being saved stops after its current batch."""
        self.saves.close()
        for proc in list(self._children):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for job in self._jobs:
            job.cancel()
        if self._jobs:
            await asyncio.gather(*self._jobs, return_exceptions=True)
        if self._saves:
            await asyncio.gather(*self._saves, return_exceptions=True)

    # --- reading ---------------------------------------------------------------------
    async def keyframe_before(self, session_id: str, t: float) -> tuple[float, int, dict[str, Any]]:
        async with self.maker() as db:
            row = (
                await db.execute(
                    sa.select(keyframes.c.t.label("at"), keyframes.c.offset, keyframes.c.screen)
                    .where(
                        keyframes.c.session_id == session_id,
                        keyframes.c.t <= t,
                        current(keyframes),
                    )
                    .order_by(keyframes.c.t.desc(), keyframes.c.offset.desc())
                    .limit(1)
                )
            ).first()
            if row is None:
                row = (
                    await db.execute(
                        sa.select(keyframes.c.t.label("at"), keyframes.c.offset, keyframes.c.screen)
                        .where(keyframes.c.session_id == session_id, current(keyframes))
                        .order_by(keyframes.c.offset)
                        .limit(1)
                    )
                ).first()
        if row is None:
            raise NotFound(f"recording {session_id} is not indexed yet")
        return float(row.at), int(row.offset), json.loads(row.screen)

    async def timeline(self, session_id: str) -> list[dict[str, Any]]:
        async with self.maker() as db:
            rows = (
                await db.execute(
                    sa.select(events)
                    .where(events.c.session_id == session_id, current(events))
                    .order_by(events.c.t, events.c.id)
                )
            ).all()
        return [{"t": r._mapping["t"], "kind": r.kind, **json.loads(r.data)} for r in rows]

    async def search(self, text: str, session_id: str | None = None, limit: int = 200) -> list[Hit]:
        """Lines containing ``text`` (case-insensitive): screen lines, commands and the
        ``"METHOD target"`` of web requests. On SQLite the full-text index narrows the rows
        first (its tokenizer splits at every non-word character, so it never drops a line
        the substring match would keep)."""
        text = " ".join(text.split())
        if not text:
            return []
        async with self.maker() as db:
            dialect = db.get_bind().dialect.name
            where = [current(text_lines)]
            if session_id is not None:
                where.append(text_lines.c.session_id == session_id)
            words = [w for w in _words(text) if w]
            if dialect == "sqlite" and words:
                phrase = " ".join('"' + w.replace('"', '""') + '"' for w in words)
                where.append(
                    text_lines.c.id.in_(
                        sa.text("SELECT rowid FROM rec_text_fts WHERE rec_text_fts MATCH :q")
                        .bindparams(q=phrase)
                        .columns(sa.column("rowid"))
                    )
                )
            # No tsquery on PostgreSQL: its parser keeps "/admin/users/7", "/etc/passwd",
            # "user@host" or "v1.2.3" as one token, so the words of a search would miss them.
            # The substring match alone is exact (a trigram index on lower(line) would serve it).
            where.append(sa.func.lower(text_lines.c.line).contains(text.lower(), autoescape=True))
            rows = (
                await db.execute(
                    sa.select(text_lines)
                    .where(*where)
                    .order_by(text_lines.c.session_id, text_lines.c.t)
                    .limit(limit)
                )
            ).all()
        return [Hit(r.session_id, float(r._mapping["t"]), r.kind, r.line) for r in rows]

    async def verify(self, session_id: str | None = None) -> list[tuple[str, str | None]]:
        """(session, problem or None) for one recording or all of them."""
        async with self.maker() as db:
            query = sa.select(recordings)
            if session_id is not None:
                query = query.where(recordings.c.session_id == session_id)
            rows = (await db.execute(query.order_by(recordings.c.started_at))).all()
        if session_id is not None and not rows:
            raise NotFound(f"no recording for session {session_id}")
        results: list[tuple[str, str | None]] = []
        for row in rows:
            path = self.root / row.path
            try:
                check = await asyncio.to_thread(verify_file, path)
            except OSError:
                results.append((row.session_id, "the recording file is missing"))
                continue
            results.append((row.session_id, verify_against_seal(check, row.sha256, row.chain_head)))
        return results


def _words(text: str) -> list[str]:
    import re

    return re.findall(r"\w+", text.lower())
