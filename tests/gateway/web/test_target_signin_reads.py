"""A target cookie whose cached entry has expired is read from the database once, however
many requests carry it at that moment (a browser's parallel requests, a load test's
connections): before, each queued its own read behind SQLite's lock and the requests were
answered one by one, seconds late."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import SessionMaker
from gateway.db.schema import upgrade
from gateway.signins.targets import CACHED, TargetSignIns, WebAccess
from tests.clock import FakeTimer


async def test_concurrent_requests_with_one_cookie_share_one_read(
    engine: AsyncEngine, maker: SessionMaker
) -> None:
    await upgrade(engine)
    timer = FakeTimer(datetime(2026, 12, 3, 9, tzinfo=UTC))
    signins = TargetSignIns(maker, timer.now, "node")
    ends = timer.now() + timedelta(hours=1)
    access = WebAccess("alice", "grafana", "svc", "g-1", ends)
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
