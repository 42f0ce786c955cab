"""The one fake clock of the test suite: expiry and policy time without sleeping."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta


class FakeTimer:
    """A clock tests move by hand; sleepers wake when it passes their time. It has a wall
    clock (``now``) and a monotonic one: ``advance`` moves both, ``step_wall`` only the wall
    clock (an NTP step or an operator's ``date -s``)."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._mono = 1000.0
        self._sleepers: list[tuple[datetime, asyncio.Future[None]]] = []
        self._mono_sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    async def sleep_monotonic(self, deadline: float) -> None:
        if deadline <= self._mono:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._mono_sleepers.append((deadline, future))
        await future

    def step_wall(self, delta: timedelta) -> None:
        """Move the wall clock only; monotonic sleepers do not notice."""
        self._now += delta

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
        self._mono += delta.total_seconds()
        due = [(w, f) for w, f in self._sleepers if w <= self._now]
        self._sleepers = [(w, f) for w, f in self._sleepers if w > self._now]
        mono_due = [(d, f) for d, f in self._mono_sleepers if d <= self._mono]
        self._mono_sleepers = [(d, f) for d, f in self._mono_sleepers if d > self._mono]
        for _, future in sorted(due, key=lambda item: item[0]) + sorted(
            mono_due, key=lambda item: item[0]
        ):
            if not future.done():
                future.set_result(None)
        for _ in range(20):  # let woken watchers run to their next sleep
            await asyncio.sleep(0)
