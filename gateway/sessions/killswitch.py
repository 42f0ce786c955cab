"""Ending sessions on time and on change.

Each live session has a watcher that warns at 5 minutes and 1 minute before its grant ends
and terminates it when the grant ends. The time left is computed once, when the watcher is
armed, and slept on the monotonic clock: a wall clock stepped back (or forward) later moves
no kill. ``end_expired`` ends, against the database's notion of now, what a node whose clock
was wrong at arming time would have kept too long; the node calls it on a timer. When access
changes anywhere in the cluster (a revocation, a lock, an extension), every live session on
this node is re-checked against the policy and ended, or its watcher re-armed, accordingly.
Time comes from a ``Timer`` so tests drive expiry with a fake clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Protocol

from gateway.sessions.registry import SessionHandle, SessionRegistry
from policy.models import utcnow

WARNINGS = ((timedelta(minutes=5), "5 minutes"), (timedelta(minutes=1), "1 minute"))


class Timer(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    async def sleep_until(self, when: datetime) -> None: ...

    async def sleep_monotonic(self, deadline: float) -> None: ...


class RealTimer:
    def now(self) -> datetime:
        return utcnow()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep_monotonic(self, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))

    async def sleep_until(self, when: datetime) -> None:
        # Sleep in bounded steps so a wall-clock jump is noticed within a minute.
        while True:
            left = (when - utcnow()).total_seconds()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 60.0))


# (user, target, account) -> (allowed, reason to show, new expires_at)
Recheck = Callable[[SessionHandle], Awaitable[tuple[bool, str, datetime | None]]]


class KillSwitch:
    def __init__(self, registry: SessionRegistry, timer: Timer, recheck: Recheck) -> None:
        self.registry = registry
        self.timer = timer
        self.recheck = recheck
        self._watchers: dict[str, asyncio.Task[None]] = {}
        registry.on_change.append(self._changed)

    def _changed(self, session: SessionHandle, added: bool) -> None:
        if added:
            self.arm(session)
        else:
            task = self._watchers.pop(session.id, None)
            if task is not None and task is not asyncio.current_task():
                task.cancel()

    def arm(self, session: SessionHandle) -> None:
        old = self._watchers.pop(session.id, None)
        if old is not None:
            old.cancel()
        if session.expires_at is not None:
            self._watchers[session.id] = asyncio.ensure_future(self._watch(session))

    async def _watch(self, session: SessionHandle) -> None:
        expires = session.expires_at
        assert expires is not None
        start = self.timer.monotonic()
        left = (expires - self.timer.now()).total_seconds()  # once: clock steps move nothing
        for before, text in WARNINGS:
            at = start + left - before.total_seconds()
            if at > self.timer.monotonic():
                await self.timer.sleep_monotonic(at)
                session.notify(f"[lockgate] access to {session.target} ends in {text}")
        await self.timer.sleep_monotonic(start + left)
        await self.registry.terminate(session.id, "grant expired")

    async def end_expired(self, now: datetime) -> int:
        """End every live session whose grant has ended by ``now`` (the database's time);
        how many were ended."""
        due = [
            s.id
            for s in list(self.registry.sessions.values())
            if s.expires_at is not None and s.expires_at <= now
        ]
        for session_id in due:
            await self.registry.terminate(session_id, "grant expired")
        return len(due)

    async def recheck_all(self) -> None:
        """Re-decide every live session; end the refused, re-arm the extended."""
        for session in list(self.registry.sessions.values()):
            allowed, reason, expires = await self.recheck(session)
            if not allowed:
                await self.registry.terminate(session.id, reason)
            elif expires is not None and expires != session.expires_at:
                session.expires_at = expires
                self.arm(session)

    async def aclose(self) -> None:
        for task in self._watchers.values():
            task.cancel()
        for task in list(self._watchers.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._watchers.clear()
