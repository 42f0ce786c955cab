"""Passive SFTP parsing from hand-built SFTP v3 packets."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from recorder.sftp import CLOSE, FXF_CREAT, FXF_WRITE, HANDLE, OPEN, WRITE, SftpTracker


def _packet(kind: int, *fields: bytes) -> bytes:
    body = bytes([kind]) + b"".join(fields)
    return struct.pack(">I", len(body)) + body


def _u32(n: int) -> bytes:
    return struct.pack(">I", n)


def _str(b: bytes) -> bytes:
    return _u32(len(b)) + b


def _upload(tracker: SftpTracker, data: bytes, close: bool) -> None:
    tracker.client(_packet(OPEN, _u32(1), _str(b"/srv/a.txt"), _u32(FXF_WRITE | FXF_CREAT)))
    tracker.server(_packet(HANDLE, _u32(1), _str(b"h1")))
    # one packet split across two reads, as the channel may deliver it
    write = _packet(WRITE, _u32(2), _str(b"h1"), struct.pack(">Q", 0), _str(data))
    tracker.client(write[:7])
    tracker.client(write[7:])
    if close:
        tracker.client(_packet(CLOSE, _u32(3), _str(b"h1")))


def test_upload_reported_at_close_and_interrupted_at_the_end() -> None:
    ops: list[Mapping[str, Any]] = []
    tracker = SftpTracker(ops.append)
    _upload(tracker, b"x" * 1000, close=True)
    assert ops == [{"op": "upload", "path": "/srv/a.txt", "bytes": 1000, "result": "ok"}]
    ops.clear()
    _upload(tracker, b"y" * 10, close=False)
    assert ops == []
    tracker.finish()  # the session ended with the file still open
    assert ops == [{"op": "upload", "path": "/srv/a.txt", "bytes": 10, "result": "interrupted"}]


def test_malformed_stream_is_reported_once_and_never_raises() -> None:
    ops: list[Mapping[str, Any]] = []
    tracker = SftpTracker(ops.append)
    tracker.client(b"\xff\xff\xff\xff garbage")
    tracker.client(b"more")
    assert ops == [{"op": "unparsed"}]
