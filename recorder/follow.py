"""Indexing recordings while they are written, so a live session can be searched.

Every ``interval`` seconds, each open recording that has grown since its last pass is
indexed again up to its last complete chunk, in the store's worker processes: the same
bounded queue as sealed recordings, so many live sessions never start more pyte processes
than the store allows, and a busy session is never slowed (the indexer lags and catches up
from the file). A pass reads the file from its start, so recordings are followed only up to
``max_size``; a larger one is indexed once it is sealed. Each index is a process start, so a
pass takes at most ``per_pass`` recordings, those that grew most since their last index:
with a thousand busy sessions the cost stays bounded, the others wait for a later pass, and
a sealed recording never queues behind more than one live one.
"""

from __future__ import annotations

import asyncio
import logging

from recorder.recorder import Recorder
from recorder.store import RecordingStore

log = logging.getLogger(__name__)

LIVE_INDEX_SECONDS = 30.0
LIVE_INDEX_MAX = 64 * 1024 * 1024
LIVE_PER_PASS = 4


class LiveIndexer:
    def __init__(
        self,
        recorder: Recorder,
        store: RecordingStore,
        *,
        interval: float = LIVE_INDEX_SECONDS,
        max_size: int = LIVE_INDEX_MAX,
        per_pass: int = LIVE_PER_PASS,
    ) -> None:
        self.recorder = recorder
        self.store = store
        self.interval = interval
        self.max_size = max_size
        self.per_pass = per_pass
        self._seen: dict[str, int] = {}  # session -> size at its last pass

    async def follow_once(self) -> list[str]:
        """One pass over the open recordings; returns the sessions indexed."""
        grown = sorted(
            (
                (rec.size - self._seen.get(session_id, 0), session_id, rec)
                for session_id, rec in self.recorder.live.items()
                if self._seen.get(session_id, 0) < rec.size <= self.max_size
            ),
            key=lambda item: item[0],
            reverse=True,
        )
        indexed = []
        for _, session_id, rec in grown[: self.per_pass]:
            # Counted as seen even if it fails: a failing recording must not take a slot in
            # every pass; its sealed index comes anyway.
            self._seen[session_id] = rec.size
            await rec.synced()  # what was flushed so far is in the file
            try:
                await self.store.index(session_id, live=True)
            except Exception:
                log.exception("indexing live recording %s failed", session_id)
                continue
            indexed.append(session_id)
        for gone in self._seen.keys() - self.recorder.live.keys():
            del self._seen[gone]
        return indexed

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.follow_once()
            except Exception:  # the next pass tries again; the loop must not die
                log.exception("following live recordings failed")
