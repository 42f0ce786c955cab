"""Indexing recordings while they are written, so a live session can be searched.

Every ``interval`` seconds, each open recording that has grown since its last pass is
indexed further, up to its last complete chunk, in the store's worker processes: the same
bounded queue as sealed recordings, so many live sessions never start more pyte processes
than the store allows, and a busy session is never slowed (the indexer lags and catches up
from the file). A pass goes on from where the last one stopped (``RecordingStore.index_live``)
and reads at most ``max_bytes`` of new chunks, so its cost follows what was written since,
not the session's length. Each index is a process start, so a pass takes at most
``per_pass`` recordings, those with most left to index: with a thousand busy sessions the
cost stays bounded, the others wait for a later pass, and a sealed recording never queues
behind more than one live one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from recorder.recorder import Recorder
from recorder.store import RecordingStore

log = logging.getLogger(__name__)

LIVE_INDEX_SECONDS = 30.0
LIVE_PASS_BYTES = 64 * 1024 * 1024
LIVE_PER_PASS = 4


class LiveIndexer:
    def __init__(
        self,
        recorder: Recorder,
        store: RecordingStore,
        *,
        interval: float = LIVE_INDEX_SECONDS,
        max_bytes: int = LIVE_PASS_BYTES,
        per_pass: int = LIVE_PER_PASS,
    ) -> None:
        self.recorder = recorder
        self.store = store
        self.interval = interval
        self.max_bytes = max_bytes
        self.per_pass = per_pass
        self._done: dict[str, int] = {}  # session -> bytes indexed (or skipped after a failure)
        self._resume: dict[str, dict[str, Any]] = {}  # session -> where its next pass goes on

    async def follow_once(self) -> list[str]:
        """One pass over the open recordings; returns the sessions indexed."""
        behind = sorted(
            (
                (rec.size - self._done.get(session_id, 0), session_id, rec)
                for session_id, rec in self.recorder.live.items()
                if self._done.get(session_id, 0) < rec.size
            ),
            key=lambda item: item[0],
            reverse=True,
        )
        indexed = []
        for _, session_id, rec in behind[: self.per_pass]:
            await rec.synced()  # what was flushed so far is in the file
            try:
                result = await self.store.index_live(
                    session_id, self._resume.get(session_id), self.max_bytes
                )
            except Exception:
                # A failing recording must not take a slot in every pass: it waits until it
                # grows, and then starts over (its sealed index comes anyway).
                log.exception("indexing live recording %s failed", session_id)
                self._done[session_id] = rec.size
                self._resume.pop(session_id, None)
                continue
            if result is None or result.resume is None:  # sealed meanwhile
                self._done[session_id] = rec.size
                continue
            self._done[session_id] = result.size
            self._resume[session_id] = result.resume
            indexed.append(session_id)
        for gone in self._done.keys() - self.recorder.live.keys():
            del self._done[gone]
            self._resume.pop(gone, None)
        return indexed

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.follow_once()
            except Exception:  # the next pass tries again; the loop must not die
                log.exception("following live recordings failed")
