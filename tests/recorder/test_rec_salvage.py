"""A recording left unsealed by a dead process is sealed as interrupted, as far as the file
allows: its intact chunks kept, a torn last write cut off, the seal verifiable, once."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from recorder.events import Kind, decode_records, read_chunks
from recorder.integrity import verify_file
from recorder.recorder import Recorder
from recorder.salvage import seal_file, seal_interrupted
from recorder.store import RecordingStore
from recorder.tables import recordings
from tests.libdb import SessionMaker
from tests.recorder.conftest import Clock


async def _crashed(recorder: Recorder, clock: Clock, sid: str) -> Path:
    """A recording with two written chunks whose process then died (no seal)."""
    rec = await recorder.start(sid, meta={"user": "alice", "target": "db01"})
    rec.output(b"first screen\r\n")
    rec.flush()
    clock.t += 2.5
    rec.output(b"second screen\r\n")
    rec.flush()
    await rec.synced()
    rec.abandon()  # what a SIGKILL leaves: the descriptor gone, no seal record
    return rec.path


async def test_a_torn_recording_is_sealed_as_interrupted_and_verifies(
    recorder: Recorder, clock: Clock, store: RecordingStore, maker: SessionMaker
) -> None:
    path = await _crashed(recorder, clock, "se-torn")
    intact = path.read_bytes()
    with path.open("ab") as f:
        f.write(b"LGC1\x40\x00\x00\x00half a chunk")  # a write cut short by the kill
    assert not verify_file(path).ok
    sealed: list[str] = []

    done = await seal_interrupted(
        recorder.root, maker, ["se-torn", "se-unknown"], "worker lost", on_sealed=sealed.append
    )

    assert done == 1 and sealed == ["se-torn"]
    check = verify_file(path)
    assert check.ok and check.sealed
    data = path.read_bytes()
    assert data.startswith(intact)  # nothing recorded was lost or changed
    last = list(read_chunks(data))[-1]
    [seal] = list(decode_records(last.payload))
    assert seal.kind is Kind.SEAL and b'"interrupted": true' in seal.data
    assert seal.t == pytest.approx(2.5)  # the recording's last moment
    assert await store.verify("se-torn") == [("se-torn", None)]
    async with maker() as db:
        row = (
            await db.execute(sa.select(recordings).where(recordings.c.session_id == "se-torn"))
        ).one()
    assert row.end_reason == "worker lost (recording interrupted)"
    assert row.size == len(data) and row.duration == pytest.approx(2.5)

    # Found dead twice (the restarted worker and another node): sealed once.
    assert await seal_interrupted(recorder.root, maker, ["se-torn"], "node lost") == 0
    again = seal_file(path, "node lost")
    assert path.read_bytes() == data and again.sha256 == check.sha256 and again.cut == 0


async def test_two_nodes_sealing_the_same_file_at_once_append_one_seal(
    recorder: Recorder, clock: Clock
) -> None:
    path = await _crashed(recorder, clock, "se-race")
    first, second = await asyncio.gather(
        asyncio.to_thread(seal_file, path, "node lost"),
        asyncio.to_thread(seal_file, path, "worker lost"),
    )
    assert first.sha256 == second.sha256
    seals = [
        r for c in read_chunks(path.read_bytes()) for r in decode_records(c.payload)
        if r.kind is Kind.SEAL
    ]  # fmt: skip
    assert len(seals) == 1 and verify_file(path).sealed


async def test_a_file_this_host_cannot_read_keeps_no_seal_and_says_so(
    recorder: Recorder, clock: Clock, maker: SessionMaker
) -> None:
    path = await _crashed(recorder, clock, "se-elsewhere")
    os.unlink(path)  # recordings on another host's disk
    assert await seal_interrupted(recorder.root, maker, ["se-elsewhere"], "node lost") == 0
    async with maker() as db:
        row = (
            await db.execute(sa.select(recordings).where(recordings.c.session_id == "se-elsewhere"))
        ).one()
    assert row.sha256 is None and row.ended_at is not None
    assert row.end_reason == "node lost; not sealed: the file is not readable here"
    garbage = path.with_name("garbage.lgrec")
    garbage.write_bytes(b"not a recording")
    with pytest.raises(ValueError):
        seal_file(garbage, "node lost")
