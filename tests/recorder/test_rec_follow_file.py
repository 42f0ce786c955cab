"""Following a recording another process is writing: only whole chunks are read, and the
next call goes on from where the last one stopped."""

from __future__ import annotations

from pathlib import Path

import pytest

from recorder.events import GENESIS, MAGIC, Kind, encode_chunk, encode_record, records_after


def test_records_after_reads_whole_chunks_and_resumes(tmp_path: Path) -> None:
    first, link = encode_chunk(GENESIS, 0, encode_record(0.5, Kind.OUTPUT, b"one"))
    second, _ = encode_chunk(link, 1, encode_record(1.5, Kind.OUTPUT, b"two"))
    path = tmp_path / "live.lgrec"
    path.write_bytes(MAGIC[:5])  # the writer has only begun
    assert records_after(str(path), 0) == ([], 0)
    path.write_bytes(MAGIC + first + second[:-1])  # the second chunk's last byte is missing
    records, offset = records_after(str(path), 0)
    assert [(r.t, r.data) for r in records] == [(0.5, b"one")]
    assert offset == len(MAGIC) + len(first)
    assert records_after(str(path), 0, decode=False) == ([], offset)
    path.write_bytes(MAGIC + first + second)
    records, end = records_after(str(path), offset)
    assert [(r.t, r.data) for r in records] == [(1.5, b"two")]
    assert end == path.stat().st_size
    assert records_after(str(path), end) == ([], end)


def test_records_after_refuses_what_is_not_a_recording(tmp_path: Path) -> None:
    path = tmp_path / "other"
    path.write_bytes(b"x" * 64)
    with pytest.raises(ValueError):
        records_after(str(path), 0)
    path.write_bytes(MAGIC + b"XXXX" + bytes(12))
    with pytest.raises(ValueError):
        records_after(str(path), 0)
