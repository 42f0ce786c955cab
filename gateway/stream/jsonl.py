"""The JSON-lines sink: one line per audit event, flushed and fsynced before the cursor moves,
with size-based rotation (``path`` -> ``path.1`` -> ... -> ``path.<keep>``, the oldest
dropped)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Sequence
from typing import IO

from gateway.stream.record import StreamRecord
from gateway.stream.settings import JsonlSink
from gateway.stream.sink import SinkError


class JsonlFileSink:
    def __init__(self, settings: JsonlSink) -> None:
        self.settings = settings
        self.name = settings.name
        self._file: IO[bytes] | None = None
        self._written = 0

    async def open(self) -> None:
        try:
            await asyncio.to_thread(self._open)
        except OSError as exc:
            raise SinkError(f"cannot open {self.settings.path} ({exc.strerror})") from None

    def _open(self) -> None:
        self.settings.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.settings.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "ab")
        self._written = 0

    async def send(self, records: Sequence[StreamRecord]) -> None:
        lines = b"".join(
            json.dumps(r.as_json(), separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
            for r in records
        )
        try:
            await asyncio.to_thread(self._write, lines)
        except OSError as exc:
            raise SinkError(f"cannot write {self.settings.path} ({exc.strerror})") from None
        if records:
            self._written = records[-1].seq

    def _write(self, lines: bytes) -> None:
        assert self._file is not None
        if self._file.tell() and self._file.tell() + len(lines) > self.settings.max_bytes:
            self._rotate()
        self._file.write(lines)
        self._file.flush()
        os.fsync(self._file.fileno())

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        path, keep = self.settings.path, self.settings.keep
        for index in range(keep - 1, 0, -1):
            older = path.with_name(f"{path.name}.{index}")
            if older.exists():
                older.replace(path.with_name(f"{path.name}.{index + 1}"))
        path.replace(path.with_name(f"{path.name}.1"))
        self._open()

    async def confirmed(self) -> int:
        return self._written

    async def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
