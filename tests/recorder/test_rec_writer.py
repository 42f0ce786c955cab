"""The recording file: masking of unechoed input, the hash chain, the seal, failures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from recorder.events import Kind, iter_records_from, read_chunks
from recorder.integrity import verify_against_seal, verify_bytes, verify_file
from recorder.recorder import Recorder
from recorder.store import RecordingStore
from recorder.tables import recordings
from tests.libdb import SessionMaker
from tests.recorder.conftest import Clock

SECRET = b"Sup3rS3cretSudoPw"


async def _session(recorder: Recorder, clock: Clock) -> str:
    rec = await recorder.start(
        "se-1", meta={"user": "alice", "target": "db01", "account": "root"}, width=80, height=24
    )
    rec.output(b"alice@db01:~$ ")
    for ch in b"sudo ls":  # typed one key at a time, each echoed
        clock.t += 0.1
        rec.input(bytes([ch]))
        rec.output(bytes([ch]))
    rec.input(b"\r")
    rec.output(b"\r\n[sudo] password for alice: ")
    clock.t += 1
    rec.input(SECRET[:5])  # no echo while the password is typed
    rec.input(SECRET[5:] + b"\r")
    rec.output(b"\r\nfile1  file2\r\nalice@db01:~$ ")
    rec.input(b"read -s X\r")
    rec.output(b"read -s X\r\n")
    rec.input(b"hidden-by-read\r")
    rec.output(b"\r\n")
    rec.resize(120, 40)
    rec.marker("warning", "access to db01 ends in 5 minutes")
    clock.t += 2
    await rec.close("client disconnected")
    return str(rec.path)


async def test_unechoed_input_is_only_counted(
    recorder: Recorder, clock: Clock, maker: SessionMaker
) -> None:
    path = await _session(recorder, clock)
    data = Path(path).read_bytes()
    assert SECRET not in data and SECRET[:5] not in data and b"hidden-by-read" not in data
    records = list(iter_records_from(path, 0))
    typed = b"".join(r.data for r in records if r.kind is Kind.INPUT)
    assert b"sudo ls" in typed
    masked = [r for r in records if r.kind is Kind.MASKED]
    assert sum(int.from_bytes(r.data, "little") for r in masked) == len(SECRET) + len(
        b"hidden-by-read"
    )
    async with maker() as db:
        text = repr((await db.execute(sa.select(recordings))).all())
    assert SECRET.decode() not in text


async def test_seal_and_tamper_detection(
    recorder: Recorder, clock: Clock, store: RecordingStore
) -> None:
    path = await _session(recorder, clock)
    assert await store.verify("se-1") == [("se-1", None)]
    original = Path(path).read_bytes()
    check = verify_file(Path(path))
    assert check.ok and check.sealed
    chunks = list(read_chunks(original))
    assert len(chunks) >= 1

    def tampered(data: bytes) -> str | None:
        with open(path, "wb") as f:
            f.write(data)
        row_check = verify_bytes(data)
        return verify_against_seal(row_check, check.sha256, check.chain_head)

    flipped = bytearray(original)
    flipped[len(original) // 2] ^= 0x01
    assert tampered(bytes(flipped)) is not None
    assert tampered(original[:-1]) is not None
    assert tampered(original[: chunks[-1].offset]) is not None  # whole last chunk dropped
    assert tampered(original + b"extra") is not None
    with open(path, "wb") as f:
        f.write(bytes(flipped))
    result = await store.verify("se-1")
    assert result[0][1] is not None
    with open(path, "wb") as f:
        f.write(original)
    assert await store.verify() == [("se-1", None)]


async def test_reordered_chunks_detected(recorder: Recorder, clock: Clock) -> None:
    rec = await recorder.start("se-2", meta={}, width=80, height=24)
    for i in range(3):
        rec.output(f"chunk {i}\r\n".encode())
        rec.flush()
    await rec.close("done")
    data = Path(rec.path).read_bytes()
    chunks = list(read_chunks(data))
    a, b = chunks[1], chunks[2]
    swapped = (
        data[: a.offset]
        + data[b.offset : chunks[3].offset]
        + data[a.offset : b.offset]
        + data[chunks[3].offset :]
    )
    assert not verify_bytes(swapped).ok


async def test_write_failure_reported_once_and_fails_closed(recorder: Recorder) -> None:
    rec = await recorder.start("se-3", meta={}, width=80, height=24)
    failures: list[BaseException] = []
    rec.add_failure_callback(failures.append)
    os.close(rec._fd)  # the disk goes away under the recording
    rec.output(b"x" * 10)
    rec.flush()
    await rec.synced()
    assert len(failures) == 1 and isinstance(failures[0], OSError)
    with pytest.raises(Exception, match="failed"):
        rec.output(b"more")


async def test_exec_sessions_mask_all_stdin(recorder: Recorder) -> None:
    rec = await recorder.start("se-4", meta={}, width=80, height=24, pty=False)
    rec.exec_command("mysql -p")
    rec.input(b"db-password-here\n")
    rec.output(b"ok\n")
    await rec.close("done")
    data = Path(rec.path).read_bytes()
    assert b"db-password-here" not in data and b"mysql -p" in data
    seal = json.loads(
        next(r for r in iter_records_from(str(rec.path), 0) if r.kind is Kind.SEAL).data
    )
    assert seal == {"reason": "done"}


async def test_output_after_close_never_touches_another_file(
    recorder: Recorder, tmp_path: Path
) -> None:
    """Regression: bytes in flight after the seal used to be written to the closed
    descriptor, which the OS had handed to another file (it corrupted the database)."""
    rec = await recorder.start("se-5", meta={}, width=80, height=24)
    rec.output(b"before\r\n")
    await rec.close("done")
    victim = tmp_path / "victim.bin"
    with victim.open("wb") as f:  # likely to get the freed descriptor number
        f.write(b"intact")
        rec.output(b"late bytes " * 100)
        rec.flush()
        rec.input(b"x")
    assert victim.read_bytes() == b"intact"
    assert rec.dropped > 0
    assert verify_file(rec.path).ok and verify_file(rec.path).sealed


async def test_a_stalled_disk_presses_back_and_loses_nothing(recorder: Recorder) -> None:
    """The writer thread stalls (a slow disk): the data path does not wait, the queue grows
    only to the high-water mark before the session is told to stop reading, and once the
    disk answers again everything reaches the file."""
    import threading

    from recorder.writer import HIGH_WATER, LOW_WATER

    rec = await recorder.start("se-6", meta={}, width=80, height=24)
    pressure: list[bool] = []
    rec.add_pressure_callback(pressure.append)
    stall = threading.Event()
    recorder.writer.submit(stall.wait)
    block = b"y" * 65536
    sent = 0
    while not pressure:
        rec.output(block)
        sent += len(block)
        assert sent <= 2 * HIGH_WATER, "no back-pressure while the disk was stalled"
    assert pressure == [True] and rec.backlog > HIGH_WATER
    stall.set()
    await rec.synced()
    assert pressure == [True, False] and rec.backlog <= LOW_WATER
    await rec.close("done")
    records = iter_records_from(str(rec.path), 0)
    assert sum(len(r.data) for r in records if r.kind is Kind.OUTPUT) == sent
    assert verify_file(rec.path).ok


async def test_a_reused_buffer_is_recorded_as_it_was(recorder: Recorder) -> None:
    """The data path keeps references until the writer thread joins a chunk: a caller's
    mutable buffer, changed after the call, must not change what was recorded."""
    rec = await recorder.start("se-buf", meta={}, pty=False)
    buffer = bytearray(b"first")
    rec.output(buffer)
    buffer[:] = b"XXXXX"
    rec.output(b"second")
    await rec.close("done")
    outputs = [r.data for r in iter_records_from(str(rec.path), 0) if r.kind is Kind.OUTPUT]
    assert outputs == [b"first", b"second"]


async def test_chunks_of_few_large_and_many_small_records(recorder: Recorder) -> None:
    """The writer hashes and writes a chunk's records as they are (few) or joined (many):
    both give chunks whose length and link verify, with every byte in order."""
    rec = await recorder.start("se-parts", meta={}, width=80, height=24)
    big = [bytes([65 + i]) * 100_000 for i in range(3)]
    for block in big:  # 3 records (+ the meta record): written part by part
        rec.output(block)
    rec.flush()
    keys = [bytes([97 + i % 26]) for i in range(500)]
    for key in keys:  # 500 records: joined before writing
        rec.output(key)
    await rec.close("done")
    check = verify_file(Path(rec.path))
    assert check.ok and check.sealed
    outputs = [r.data for r in iter_records_from(str(rec.path), 0) if r.kind is Kind.OUTPUT]
    assert outputs == big + keys


async def test_the_pty_request_is_the_first_geometry(
    recorder: Recorder, store: RecordingStore, clock: Clock
) -> None:
    """The recording starts before the client asks for a pty: the request's TERM and size
    still become the recording's size (database row, index, asciicast header), and a second
    pty request or a window change later acts as a resize."""
    from recorder.asciicast import export
    from recorder.indexer import index_file

    rec = await recorder.start("se-pty", meta={"user": "alice", "target": "db01"})
    clock.t += 0.01
    rec.terminal("screen-256color", 120, 40)
    rec.output(b"\x1b[40;1Hbottom row")
    clock.t += 1
    rec.resize(100, 30)
    rec.terminal("xterm\x1b[31m", 90, 20)  # control characters never reach the header
    await rec.close("done")
    info = await store.get("se-pty")
    assert (info.width, info.height, info.meta["term"]) == (120, 40, "screen-256color")
    index = index_file(str(rec.path))
    assert (index.width, index.height) == (120, 40)
    assert index.keyframes[0][2]["width"] == 120
    lines = [json.loads(line) for line in export(iter_records_from(str(rec.path), 0))]
    assert (lines[0]["width"], lines[0]["height"]) == (120, 40)
    assert lines[0]["env"] == {"TERM": "screen-256color"}
    assert [e[2] for e in lines[1:] if e[1] == "r"] == ["100x30", "90x20"]
