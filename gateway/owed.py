"""Writes the gateway owes the database, kept on disk while the database cannot take them.

When the database is unreachable, what has already happened must still reach it: a session's
end and its audit event, the operations audited during it, a recording's seal. Such a write
is appended as one JSON line to a journal in the data directory (fsynced before the caller
goes on) and replayed, in order, once the database answers again: every second while the
journal is not empty, and at start-up before anything else touches what it owes. Each
kind's apply function must be idempotent: a crash between a replayed write and the journal's
rewrite replays it once more, and ``write`` may owe a write whose first attempt, still under
way, succeeds later. Nothing in a journal line is secret: ids, names, reasons, sizes, digests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
Apply = Callable[[Mapping[str, Any]], Awaitable[None]]
RETRY = 1.0  # seconds between replays while something is owed
PATIENCE = 5.0  # seconds a write may take before it is owed instead (a database that hangs)
# Owed writes beyond which those an attacker can cause (refusal events) are dropped: a journal
# that grows without end during an outage would fill the data directory's disk.
ROOM = 10_000


class JournalFull(Exception):
    """The journal holds ``ROOM`` writes: one that may be dropped was not kept."""


class OwedWrites:
    def __init__(self, path: Path, on_count: Callable[[int], None] | None = None) -> None:
        self.path = path
        self.on_count = on_count
        self._apply: dict[str, Apply] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.count = _count(path)
        self.patience = PATIENCE
        self._trying: set[asyncio.Task[None]] = set()
        self._report()

    def register(self, kind: str, apply: Apply) -> None:
        self._apply[kind] = apply

    async def write(self, kind: str, payload: Mapping[str, Any], now: Apply | None = None) -> bool:
        """Write now (through ``now``, else the kind's apply function), or owe it: when the
        database refuses it or has not taken it within ``patience`` seconds. The attempt is
        never cut short (it may still succeed; the replay then finds it done). True if
        written now."""
        task = asyncio.ensure_future((now or self._apply[kind])(payload))
        self._trying.add(task)
        task.add_done_callback(self._tried)
        try:
            async with asyncio.timeout(self.patience):
                await asyncio.shield(task)
            return True
        except Exception as exc:
            log.info("writing %s failed (%s)", kind, type(exc).__name__)
        await self.owe(kind, payload)
        return False

    def _tried(self, task: asyncio.Task[None]) -> None:
        self._trying.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a late failure is already owed

    def owed_ids(self, kind: str, key: str) -> set[str]:
        """The ``payload[key]`` of every write of ``kind`` in the journal."""
        return {
            str((e.get("payload") or {}).get(key))
            for e in _read(self.path)
            if e.get("kind") == kind
        }

    async def owe(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Keep one write for later; durable once this returns."""
        line = json.dumps({"kind": kind, "payload": dict(payload)}, sort_keys=True) + "\n"
        async with self._lock:
            await asyncio.to_thread(_append, self.path, line)
            self.count += 1
        self._report()
        log.warning("database unavailable: %s kept to be written later (%d owed)", kind, self.count)
        self._wake.set()

    async def owe_if_room(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Keep a write that may be dropped once ``ROOM`` writes are owed; raises
        ``JournalFull`` when it is."""
        if self.count >= ROOM:
            raise JournalFull(f"{self.count} writes already owed; {kind} dropped")
        await self.owe(kind, payload)

    async def replay(self) -> int:
        """Apply what is owed, in order, until the first failure; returns how many were
        written. The journal keeps the rest."""
        async with self._lock:
            entries = await asyncio.to_thread(_read, self.path)
            done = 0
            for entry in entries:
                apply = self._apply.get(str(entry.get("kind")))
                if apply is None:
                    log.error(
                        "owed write of unknown kind %r left in the journal", entry.get("kind")
                    )
                    break
                try:
                    await apply(entry.get("payload") or {})
                except Exception as exc:
                    log.info("owed writes: the database still refuses (%s)", type(exc).__name__)
                    break
                done += 1
            if done:
                await asyncio.to_thread(_rewrite, self.path, entries[done:])
                self.count = len(entries) - done
                log.warning("database back: %d owed writes replayed, %d left", done, self.count)
        self._report()
        return done

    async def run(self) -> None:
        """Replay whenever something is owed (at once when woken), until cancelled."""
        while True:
            if self.count:
                with contextlib.suppress(Exception):
                    await self.replay()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETRY if self.count else 30.0):
                    await self._wake.wait()

    def _report(self) -> None:
        if self.on_count is not None:
            self.on_count(self.count)


def _count(path: Path) -> int:
    return len(_read(path))


def _append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):  # a line torn by a crash mid-append
            entries.append(json.loads(line))
    return entries


def _rewrite(path: Path, entries: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
