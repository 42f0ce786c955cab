"""Expiry runs on the monotonic clock: a wall clock stepped back or forward moves no kill;
sessions are also ended against the database's now, and a node whose clock is off from the
database's says so in its log and /readyz."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.clock import ClockWatch, database_now
from gateway.sessions.killswitch import KillSwitch
from gateway.sessions.registry import SessionRegistry
from tests.clock import FakeTimer
from tests.nodes import start_test_node


@dataclass
class Session:
    """A live session as the registry sees it (the protocol's side is not under test)."""

    id: str
    expires_at: datetime | None
    kind: str = "ssh"
    user: str = "alice"
    target: str = "db01"
    account: str = "root"
    grant_id: str | None = "g-1"
    lines: list[str] = field(default_factory=list)
    ended: str | None = None

    def notify(self, line: str) -> None:
        self.lines.append(line)

    def mark(self, kind: str, text: str) -> None:
        pass

    async def close(self, reason: str) -> None:
        self.ended = reason


async def _allowed(session: object) -> tuple[bool, str, datetime | None]:
    return True, "", None


def _switch(timer: FakeTimer) -> tuple[SessionRegistry, KillSwitch]:
    registry = SessionRegistry()
    return registry, KillSwitch(registry, timer, _allowed)


async def test_a_wall_clock_stepped_back_does_not_lengthen_a_session() -> None:
    timer = FakeTimer(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    registry, switch = _switch(timer)
    session = Session("s-1", timer.now() + timedelta(minutes=10))
    registry.add(session)
    await timer.advance(timedelta(seconds=1))
    timer.step_wall(timedelta(seconds=-25))
    for step in (timedelta(minutes=5), timedelta(minutes=4), timedelta(seconds=58)):
        await timer.advance(step)
    assert session.ended is None
    assert session.lines == [
        "[lockgate] access to db01 ends in 5 minutes",
        "[lockgate] access to db01 ends in 1 minute",
    ]
    await timer.advance(timedelta(seconds=1))
    assert session.ended == "grant expired"  # 10 minutes after arming, whatever the wall says
    await switch.aclose()


async def test_a_wall_clock_stepped_forward_does_not_cut_a_session_early() -> None:
    timer = FakeTimer(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    registry, switch = _switch(timer)
    session = Session("s-2", timer.now() + timedelta(minutes=10))
    registry.add(session)
    await timer.advance(timedelta(seconds=1))
    timer.step_wall(timedelta(minutes=30))
    await timer.advance(timedelta(minutes=9, seconds=58))
    assert session.ended is None
    await timer.advance(timedelta(seconds=1))
    assert session.ended == "grant expired"
    await switch.aclose()


async def test_sessions_past_their_grant_by_the_databases_clock_are_ended() -> None:
    timer = FakeTimer(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    registry, switch = _switch(timer)
    late = Session("s-late", timer.now() + timedelta(seconds=20))
    fine = Session("s-fine", timer.now() + timedelta(minutes=5))
    registry.add(late)
    registry.add(fine)
    # The database says it is 30 s later than this node believes.
    assert await switch.end_expired(timer.now() + timedelta(seconds=30)) == 1
    assert late.ended == "grant expired" and fine.ended is None
    await switch.aclose()


async def test_the_node_measures_its_offset_from_the_databases_clock(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    db_now = await database_now(engine)
    assert abs(db_now - datetime.now(UTC)) < timedelta(minutes=1)
    in_step = ClockWatch(engine, lambda: datetime.now(UTC))
    await in_step.check()
    assert in_step.warning() is None
    behind = ClockWatch(engine, lambda: datetime.now(UTC) - timedelta(seconds=40))
    with caplog.at_level(logging.WARNING):
        await behind.check()
    assert behind.warning() is not None and "behind the database" in behind.warning()  # type: ignore[operator]
    assert "clock skew" in caplog.text


async def test_readyz_warns_about_a_skewed_clock(db_url: str, tmp_path: Path) -> None:
    timer = FakeTimer(datetime.now(UTC) + timedelta(minutes=3))  # this node runs fast
    node = await start_test_node(db_url, tmp_path, name="skewed", timer=timer)
    try:
        url = f"http://127.0.0.1:{node.http_port}/readyz"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            body = await response.json()
        assert response.status == 200 and body["ready"] is True
        assert "ahead of the database" in body["warnings"]["clock"]
    finally:
        await node.stop("test finished")
