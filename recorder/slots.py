"""A bound shared by every process of a host: at most ``count`` holders at once.

Each slot is a lock file in ``directory``; a holder keeps an exclusive ``flock`` on one of
them. The kernel drops the lock when its holder exits (even by SIGKILL), so a slot is never
lost. The indexer uses this so that the worker processes of one ``lockgate serve`` together
run no more indexing children than one process would.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path

POLL = 0.2  # seconds between attempts while every slot is held


class HostSlots:
    def __init__(self, directory: Path, count: int) -> None:
        self.directory = directory
        self.count = max(1, count)

    def _try(self) -> int | None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for index in range(self.count):
            fd = os.open(self.directory / f"slot-{index}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd
        return None

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the body; waits (polling) while all are held elsewhere."""
        # Another process frees the slot: there is nothing in this one to wait on.
        while (fd := self._try()) is None:  # noqa: ASYNC110
            await asyncio.sleep(POLL)
        try:
            yield
        finally:
            os.close(fd)
