"""The one fake clock of the test suite: expiry and policy time without sleeping."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta


class FakeTimer:
    """A clock tests move by hand; sleepers wake when it passes their time."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._sleepers: list[tuple[datetime, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    def __call__(self) -> datetime:
        return self._now

    async def sleep_until(self, when: datetime) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((when, future))
        await future

    async def advance(self, delta: timedelta) -> None:
        self._now += delta
        due = [(w, f) for w, f in self._sleepers if w <= self._now]
        self._sleepers = [(w, f) for w, f in self._sleepers if w > self._now]
        for _, future in sorted(due, key=lambda item: item[0]):
            if not future.done():
                future.set_result(None)
        for _ in range(20):  # let woken watchers run to their next sleep
            await asyncio.sleep(0)
