"""Sealing the recording of a session whose process died: as far as the file allows.

A process killed with SIGKILL (or a host that went away) leaves its recordings unsealed,
possibly with a last chunk half written. Whoever finds the session dead (the restarted
process itself, or another node that saw it fall silent) seals the file here: the chain is
read up to its last intact chunk, anything after it (a torn write) is cut off, and one more
chunk carrying a SEAL record marked ``interrupted`` is chained on. ``recordings verify`` then
passes, and the seal says what happened; bytes that never reached the file are lost, and the
seal's reason says the recording was interrupted. Sealing is idempotent (a file that already
ends with a seal is left as it is) and takes an exclusive lock on the file, so two nodes
finding the same session dead do not both append.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from recorder.events import (
    CHUNK_HEAD,
    GENESIS,
    HASH_LEN,
    MAGIC,
    Kind,
    decode_records,
    encode_chunk,
    encode_record,
    read_chunks,
)
from recorder.tables import recordings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Salvaged:
    sha256: str
    chain_head: str
    size: int
    duration: float
    cut: int  # bytes of a torn last write that were cut off


def seal_file(path: Path, reason: str) -> Salvaged:
    """Seal ``path`` as interrupted (see the module doc); raises OSError or ValueError when
    the file cannot be read as a recording at all."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
        if not data.startswith(MAGIC):
            raise ValueError("not a Lockgate recording")
        end, prev, seq, last_t, sealed = len(MAGIC), GENESIS, 0, 0.0, False
        try:
            for chunk in read_chunks(data, complete_only=True):
                records = list(decode_records(chunk.payload))
                end = chunk.offset + CHUNK_HEAD.size + len(chunk.payload) + HASH_LEN
                prev, seq = chunk.digest, chunk.seq + 1
                if records:
                    last_t = max(last_t, records[-1].t)
                sealed = any(r.kind is Kind.SEAL for r in records)
        except ValueError:
            pass  # a damaged chunk: the chain ends at the last intact one before it
        cut = len(data) - end
        if not sealed:
            body = json.dumps({"reason": reason, "interrupted": True}).encode()
            chunk_bytes, prev = encode_chunk(prev, seq, encode_record(last_t, Kind.SEAL, body))
            os.ftruncate(fd, end)
            os.lseek(fd, end, os.SEEK_SET)
            os.write(fd, chunk_bytes)
            os.fsync(fd)
            data = data[:end] + chunk_bytes
        else:
            cut = 0  # already sealed (by someone else first): nothing is changed
        return Salvaged(hashlib.sha256(data).hexdigest(), prev.hex(), len(data), last_t, cut)
    finally:
        os.close(fd)  # also releases the lock


async def seal_interrupted(
    root: Path,
    maker: async_sessionmaker[AsyncSession],
    session_ids: Iterable[str],
    reason: str,
    *,
    on_sealed: Callable[[str], None] | None = None,
) -> int:
    """Seal the unsealed recordings of ``session_ids`` (sessions found dead) and store their
    seals; a file this host cannot reach (recordings not on shared storage) or cannot read
    keeps no seal, and its row says why. Returns how many were sealed."""
    ids = list(session_ids)
    if not ids:
        return 0
    async with maker() as db:
        rows = (
            await db.execute(
                sa.select(recordings.c.session_id, recordings.c.path).where(
                    recordings.c.session_id.in_(ids), recordings.c.sha256.is_(None)
                )
            )
        ).all()
    done = 0
    for row in rows:
        path = root / row.path
        values: dict[str, object] = {"ended_at": datetime.now(UTC)}
        try:
            seal = await asyncio.to_thread(seal_file, path, reason)
        except (OSError, ValueError) as exc:
            log.warning("recording %s cannot be sealed from here: %s", row.session_id, exc)
            values["end_reason"] = f"{reason}; not sealed: the file is not readable here"[:500]
        else:
            values.update(
                sha256=seal.sha256,
                chain_head=seal.chain_head,
                size=seal.size,
                duration=seal.duration,
                end_reason=f"{reason} (recording interrupted)"[:500],
            )
            done += 1
        async with maker() as db, db.begin():
            await db.execute(
                recordings.update()
                .where(recordings.c.session_id == row.session_id, recordings.c.sha256.is_(None))
                .values(**values)
            )
        if "sha256" in values and on_sealed is not None:
            on_sealed(row.session_id)
    return done
