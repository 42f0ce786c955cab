"""Web sign-ins (target cookies) as the nodes see them.

- A target cookie whose cached entry has expired is read from the database once, however
  many requests carry it at that moment (a browser's parallel requests, a load test's
  connections): before, each queued its own read behind SQLite's lock and the requests were
  answered one by one, seconds late.
- Ending a terminated session's sign-ins ends those made until then. The end reaches the
  database and the nodes (this one too) a little later: a person who signed in again
  meanwhile (a lock lifted, a new browser) kept being thrown out by the old end. Seen in a
  test run: after a target was locked and unlocked, 14 of 20 requests of the person's new
  sign-in got "Session ended"."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.cluster.bus import ClusterEvent
from gateway.db import SessionMaker
from gateway.db.schema import upgrade
from gateway.db.tables import cluster_events
from gateway.signins.targets import CACHED, TargetSignIns, WebAccess
from tests.clock import FakeTimer


async def _signins(
    engine: AsyncEngine, maker: SessionMaker, target: str
) -> tuple[FakeTimer, TargetSignIns, WebAccess]:
    await upgrade(engine)
    timer = FakeTimer(datetime(2026, 12, 3, 9, tzinfo=UTC))
    access = WebAccess("alice", target, "svc", "g-1", timer.now() + timedelta(hours=1))
    return timer, TargetSignIns(maker, timer.now, "node"), access


async def test_concurrent_requests_with_one_cookie_share_one_read(
    engine: AsyncEngine, maker: SessionMaker
) -> None:
    timer, signins, access = await _signins(engine, maker, "grafana")
    ends = access.expires_at
    value = await signins.new_login(access, ends)
    reads: list[str] = []

    def count(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if "FROM gw_web_logins" in statement:
            reads.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        assert signins.cached(value, "grafana") is not None  # fresh from the hand-off
        await timer.advance(CACHED + timedelta(seconds=1))
        assert signins.cached(value, "grafana") is None
        found = await asyncio.gather(*(signins.login(value, "grafana") for _ in range(50)))
        assert all(f is not None and f.access == access for f in found)
        assert len(reads) == 1
        assert await signins.login(value, "grafana") is not None  # from memory again
        assert len(reads) == 1
        unknown = await asyncio.gather(*(signins.login("nope", "grafana") for _ in range(5)))
        assert unknown == [None] * 5 and len(reads) == 2
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)


async def test_an_end_leaves_a_sign_in_made_after_it_and_its_session(
    engine: AsyncEngine, maker: SessionMaker
) -> None:
    timer, signins, access = await _signins(engine, maker, "echo")
    ends = access.expires_at
    before = await signins.new_login(access, ends)
    ended_at = timer.now()
    # The person signs in again a second after the end, on another node, and that lands
    # in the database before the end's own write does.
    timer.step_wall(timedelta(seconds=1))
    again = await TargetSignIns(maker, timer.now, "node-2").new_login(access, ends)
    timer.step_wall(timedelta(seconds=-1))
    signins.ended_here(access, "target echo is locked")
    await signins.aclose()  # the end's write is done
    timer.step_wall(timedelta(seconds=1))

    reader = TargetSignIns(maker, timer.now, "reader")
    old, new = await reader.login(before, "echo"), await reader.login(again, "echo")
    assert old is not None and old.ended == "target echo is locked"
    assert new is not None and new.ended is None
    # What the other nodes (and this one) are told: the old sign-in, and when it ended.
    async with maker() as db:
        row = (await db.execute(sa.select(cluster_events))).one()
    told: list[tuple[str, datetime]] = []

    async def ended(_: WebAccess, reason: str, at: datetime) -> None:
        told.append((reason, at))

    fresh = TargetSignIns(maker, timer.now, "other-node")
    fresh.on_ended.append(ended)
    assert await fresh.login(again, "echo") is not None  # cached before the event
    await fresh.on_event(
        ClusterEvent(row.id, row.at, row.origin, row.kind, json.loads(row.payload))
    )
    assert told == [("target echo is locked", ended_at)]  # sessions started later stay
    found = fresh.cached(again, "echo")
    assert found is not None and found.ended is None
    found = await fresh.login(before, "echo")
    assert found is not None and found.ended == "target echo is locked"
