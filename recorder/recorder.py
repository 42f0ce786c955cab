"""The recorder: opens recordings under its root and records their seals in the database."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from recorder.disk import DiskWriter
from recorder.errors import RecordingFailed
from recorder.events import (
    MAGIC,
    Kind,
)
from recorder.tables import recordings
from recorder.writer import Seal, SessionRecording, _clamp


class Recorder:
    """Opens recordings under ``root`` and records their seals in the database."""

    def __init__(
        self,
        root: Path,
        maker: async_sessionmaker[AsyncSession],
        *,
        clock: Callable[[], float] = time.monotonic,
        on_sealed: Callable[[str], None] | None = None,
        defer_seal: Callable[[Seal, str], Awaitable[None]] | None = None,
    ) -> None:
        self.root = root
        # Called instead of raising when a sealed file's row cannot be updated (the database
        # is unreachable): the caller keeps the seal and stores it later (``store_seal``).
        self.defer_seal = defer_seal
        self.maker = maker
        self.clock = clock
        self.on_sealed = on_sealed  # e.g. queue the recording for indexing
        self.writer = DiskWriter()
        self.live: dict[str, SessionRecording] = {}  # started, not yet closing

    def path_for(self, session_id: str, started: datetime) -> Path:
        return self.root / started.strftime("%Y/%m/%d") / f"{session_id}.lgrec"

    async def start(
        self,
        session_id: str,
        *,
        meta: Mapping[str, str],
        width: int = 80,
        height: int = 24,
        term: str = "xterm",
        pty: bool = True,
    ) -> SessionRecording:
        """Create the file (never overwriting) and its database row; raises RecordingFailed."""
        started = datetime.now(UTC)
        path = self.path_for(session_id, started)
        width, height = _clamp(width), _clamp(height)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            os.write(fd, MAGIC)
        except OSError as exc:
            raise RecordingFailed(f"cannot create the recording for {session_id}") from exc
        header = {
            **dict(meta),
            "term": term,
            "width": width,
            "height": height,
            "started": started.isoformat(),
        }
        rec = SessionRecording(self, session_id, path, fd, width, height, pty)
        rec._add(Kind.META, json.dumps(header).encode())
        try:
            async with self.maker() as db, db.begin():
                await db.execute(
                    recordings.insert().values(
                        session_id=session_id,
                        path=str(path.relative_to(self.root)),
                        started_at=started,
                        width=width,
                        height=height,
                        duration=0.0,
                        size=0,
                        meta=json.dumps(header),
                        user=str(meta.get("user", ""))[:255] or None,
                        target=str(meta.get("target", ""))[:255] or None,
                        indexed_to=0,
                    )
                )
        except Exception as exc:
            rec.abandon()
            raise RecordingFailed(f"cannot register the recording for {session_id}") from exc
        self.live[session_id] = rec
        return rec

    async def geometry(self, session_id: str, fields: Mapping[str, Any]) -> None:
        """The first pty request's TERM and size, into the recording's row."""
        async with self.maker() as db, db.begin():
            row = (
                await db.execute(
                    sa.select(recordings.c.meta).where(recordings.c.session_id == session_id)
                )
            ).first()
            if row is None:
                return
            await db.execute(
                recordings.update()
                .where(recordings.c.session_id == session_id)
                .values(
                    width=fields["width"],
                    height=fields["height"],
                    meta=json.dumps({**json.loads(row.meta), **fields}),
                )
            )

    async def sealed(self, seal: Seal, reason: str) -> None:
        """Store the seal of a file already sealed on disk; deferred (``defer_seal``) when
        the database cannot take it."""
        try:
            await self.store_seal(seal, reason)
        except Exception:
            if self.defer_seal is None:
                raise
            await self.defer_seal(seal, reason)

    async def store_seal(self, seal: Seal, reason: str) -> None:
        """The seal's row update (idempotent); raises if the database refuses it."""
        async with self.maker() as db, db.begin():
            await db.execute(
                recordings.update()
                .where(recordings.c.session_id == seal.session_id)
                .values(
                    ended_at=datetime.now(UTC),
                    duration=seal.duration,
                    size=seal.size,
                    sha256=seal.sha256,
                    chain_head=seal.chain_head,
                    end_reason=reason[:500],
                )
            )
        if self.on_sealed is not None:
            self.on_sealed(seal.session_id)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.writer.stop)
