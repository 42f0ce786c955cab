"""A web session that ends while the database is away (``tests.outage``) is recorded with its
true reason once the database returns, its recording sealed: the same owed path as SSH."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.http.session import IDLE_TIMEOUT
from policy.service import SYSTEM_ACTOR
from recorder.store import RecordingStore
from tests.conftest import DB_KINDS, PG_URL
from tests.eventually import eventually
from tests.gateway.http.conftest import Starter
from tests.gateway.http.test_kill import opened
from tests.outage import Outage, database_outage


@pytest.fixture(params=DB_KINDS)
async def cut(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Outage]:
    async with database_outage(request.param, tmp_path, PG_URL) as outage:
        try:
            yield outage
        finally:
            await outage.restore()


@pytest.fixture
def db_url(cut: Outage) -> str:
    return cut.url


async def test_a_web_session_that_goes_idle_during_an_outage_is_recorded_afterwards(
    start_web: Starter, cut: Outage
) -> None:
    web = await start_web("host")
    browser = await opened(web)
    async with browser.get(web.base("echo") + "before") as resp:
        assert resp.status == 200
    (session,) = web.sessions("echo")
    await cut.cut()
    await web.timer.advance(IDLE_TIMEOUT + timedelta(seconds=1))
    await eventually(lambda: not web.sessions("echo"), what="the idle session to end")
    owed = web.node.owed
    assert owed is not None
    await eventually(lambda: owed.count >= 1, what="the end owed")
    await cut.restore()
    await eventually(lambda: owed.count == 0, what="owed writes replayed")

    record = await web.node.services.sessions.get(SYSTEM_ACTOR, session.id)
    assert not record.active and record.end_reason == "idle timeout"
    ends = [
        e for e in await web.node.services.audit.events()
        if e.action == "session.end" and e.subject == session.id
    ]  # fmt: skip
    assert len(ends) == 1 and ends[0].details["reason"] == "idle timeout"
    assert "ended_at" in ends[0].details
    store = RecordingStore(web.node.config.recordings_path, web.node.services.maker)
    try:
        assert (await store.get(session.id)).sealed
        assert await store.verify(session.id) == [(session.id, None)]
    finally:
        await store.aclose()
    assert (await web.node.services.audit.verify()).ok
