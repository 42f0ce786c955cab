"""The recorder's disk thread: file writes in order, off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


class DiskWriter:
    """One thread that runs a recorder's file writes in order, off the event loop."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="lockgate-recording-writer", daemon=True
                )
                self._thread.start()
        self._jobs.put(job)

    async def run(self, job: Callable[[], None]) -> None:
        """Run ``job`` after every job submitted before it; its exception is raised here."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def wrapped() -> None:
            try:
                job()
            except BaseException as exc:  # handed to the awaiting coroutine, not lost
                post(loop, _settle, done, exc)
            else:
                post(loop, _settle, done, None)

        self.submit(wrapped)
        await done

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join()


def post(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    """Hand a result back to the event loop; a loop that has closed has no one left to
    tell, and the writer thread must live on for the others."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)


def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)


def write_all(fd: int, parts: list[bytes]) -> None:
    views = [memoryview(p) for p in parts]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
