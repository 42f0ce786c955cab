"""Node liveness: a node silent longer than ``node_lost_after`` is declared lost by another,
once; its sessions end (``node lost``, or ``worker lost`` for a worker whose siblings still
beat), each end audited, their recordings sealed as interrupted; a node that finds itself
declared lost ends what it still holds. Time is the fake clock, moved by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncssh
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import AuditLog
from gateway.cluster.liveness import Liveness, NodeRow, silent, workers_ready
from gateway.db import SessionMaker
from gateway.db.schema import upgrade
from gateway.sessions.records import NewSession, SessionStore
from policy.service import SYSTEM_ACTOR, PolicyService
from recorder.integrity import verify_file
from recorder.recorder import Recorder
from recorder.salvage import seal_interrupted
from recorder.store import RecordingStore
from tests.clock import FakeTimer
from tests.nodes import start_test_node

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
AFTER = timedelta(seconds=30)


def _row(name: str, parent: str, beat: float, **kw: object) -> NodeRow:
    at = T0 + timedelta(seconds=beat)
    return NodeRow(name, parent, "h", 1, 2, T0, at, **kw)  # type: ignore[arg-type]


def test_who_is_declared_lost_and_why() -> None:
    now = T0 + timedelta(seconds=100)
    rows = [
        _row("gw1-w0", "gw1", 99),  # beats
        _row("gw1-w1", "gw1", 60),  # silent, its sibling beats: a worker of a live node
        _row("gw2-w0", "gw2", 60),  # a whole node silent
        _row("gw2-w1", "gw2", 60),
        _row("gw3", "gw3", 69),  # silent for 31 s: alone, so the node
        _row("gw4", "gw4", 71),  # silent for 29 s: not yet
        _row("gw5", "gw5", 0, stopped_at=T0),  # stopped cleanly
        _row("gw6", "gw6", 0, lost_at=T0),  # already declared lost
        _row("gw7-w0", "gw7", 69),  # a node that died: its workers stopped a second apart,
        _row("gw7-w1", "gw7", 70.5),  # so the one still within the limit proves nothing
    ]
    found = {row.name: reason for row, reason in silent(rows, "gw1-w0", now, AFTER)}
    assert found == {
        "gw1-w1": "worker lost",
        "gw2-w0": "node lost",
        "gw2-w1": "node lost",
        "gw3": "node lost",
        "gw7-w0": "node lost",
    }
    assert "gw3" not in [r.name for r, _ in silent(rows, "gw3", now, AFTER)]  # never itself
    assert not workers_ready(rows, "gw1", 2, now, AFTER)  # gw1-w1 is silent
    assert workers_ready([*rows[:1], _row("gw1-w1", "gw1", 80)], "gw1", 2, now, AFTER)
    assert not workers_ready(rows[:1], "gw1", 2, now, AFTER)  # gw1-w1 never started
    assert workers_ready([_row("gw4", "gw4", 71)], "gw4", 1, now, AFTER)


@dataclass
class Cluster:
    timer: FakeTimer
    maker: SessionMaker
    audit: AuditLog
    recorder: Recorder
    root: Path

    def node(self, name: str, parent: str = "", workers: int = 1) -> Liveness:
        policy = PolicyService(self.maker, [], self.audit, clock=self.timer.now)
        sessions = SessionStore(self.maker, policy, self.audit, name)

        async def seal(ids: list[str], reason: str) -> None:
            await seal_interrupted(self.root, self.maker, ids, reason)

        return Liveness(
            self.maker, sessions, self.audit, name, self.timer.now, parent=parent,
            workers=workers, interval=5, lost_after=30, on_lost=seal,
            monotonic=self.timer.monotonic,
        )  # fmt: skip

    async def session_on(self, node: Liveness, sid: str) -> Path:
        """A live session on ``node`` with a recording its process never sealed."""
        await node.sessions.started(
            NewSession(sid, "ssh", "alice", "db01", "root", None, "1.2.3.4")
        )
        rec = await self.recorder.start(sid, meta={"user": "alice", "target": "db01"})
        rec.output(b"uptime\r\n")
        rec.flush()
        await rec.synced()
        rec.abandon()
        return rec.path


@pytest.fixture
async def cluster(
    engine: AsyncEngine, maker: SessionMaker, tmp_path: Path
) -> AsyncIterator[Cluster]:
    await upgrade(engine)
    timer = FakeTimer(T0)
    audit = AuditLog(maker, node="test", clock=timer.now)
    recorder = Recorder(tmp_path / "rec", maker)
    yield Cluster(timer, maker, audit, recorder, tmp_path / "rec")
    await recorder.aclose()


async def test_a_silent_node_is_declared_lost_once_and_its_sessions_end(cluster: Cluster) -> None:
    a, b, c = cluster.node("gw-a"), cluster.node("gw-b"), cluster.node("gw-c")
    for node in (a, b, c):
        await node.started()
    path = await cluster.session_on(b, "se-on-b")
    assert await a.reap() == [] and await c.reap() == []  # watching from now on

    await cluster.timer.advance(timedelta(seconds=29))
    await a.beat()
    await c.beat()
    assert await a.reap() == []  # b has been silent 29 s: not yet
    record = await b.sessions.get(SYSTEM_ACTOR, "se-on-b")
    assert record.active

    await cluster.timer.advance(timedelta(seconds=2))
    await c.beat()
    assert await a.reap() == [("gw-b", "node lost", ["se-on-b"])]
    assert await c.reap() == []  # claimed once, by one node

    record = await b.sessions.get(SYSTEM_ACTOR, "se-on-b")
    assert not record.active and record.end_reason == "node lost"
    events = await cluster.audit.events()
    [end] = [e for e in events if e.action == "session.end" and e.subject == "se-on-b"]
    assert end.details == {"reason": "node lost", "target": "db01", "node": "gw-b", "by": "gw-a"}
    [lost] = [e for e in events if e.action == "node.lost"]
    assert lost.subject == "gw-b" and lost.details["sessions"] == 1
    assert lost.details["by"] == "gw-a"
    check = verify_file(path)
    assert check.ok and check.sealed  # sealed as interrupted
    info = await RecordingStore(cluster.root, cluster.maker).get("se-on-b")
    assert info.sealed and info.end_reason == "node lost (recording interrupted)"

    listed = {n["name"]: n for n in await a.listing()}
    assert listed["gw-b"]["state"] == "lost" and listed["gw-b"]["lost_by"] == "gw-a"
    assert listed["gw-a"]["state"] == "live" and listed["gw-b"]["sessions"] == 0
    assert await a.ready()


async def test_a_node_that_finds_itself_declared_lost_ends_what_it_holds(
    cluster: Cluster,
) -> None:
    a, b = cluster.node("gw-a"), cluster.node("gw-b")
    ended: list[str] = []

    async def declared() -> None:
        ended.append("ended")

    b.on_declared_lost = declared
    await a.started()
    await b.started()
    assert await a.reap() == []
    await cluster.timer.advance(timedelta(seconds=31))  # b could not reach the database
    await a.beat()
    assert [name for name, _, _ in await a.reap()] == ["gw-b"]
    await b.beat()  # back
    assert ended == ["ended"]
    listed = {n["name"]: n["state"] for n in await a.listing()}
    assert listed["gw-b"] == "live"  # registered anew
    await b.beat()
    assert ended == ["ended"]  # once


async def test_a_dead_worker_of_a_live_node_ends_as_worker_lost_and_readiness_follows(
    cluster: Cluster,
) -> None:
    w0, w1 = cluster.node("gw-w0", "gw", 2), cluster.node("gw-w1", "gw", 2)
    await w0.started()
    assert not await w0.ready()  # its sibling has not started
    await w1.started()
    assert await w0.ready() and await w1.ready()
    await cluster.session_on(w1, "se-on-w1")
    assert await w0.reap() == []

    await cluster.timer.advance(timedelta(seconds=20))
    await w0.beat()
    await cluster.timer.advance(timedelta(seconds=11))  # w1 silent 31 s, w0 11 s
    assert not await w0.ready()
    assert await w0.reap() == [("gw-w1", "worker lost", ["se-on-w1"])]
    record = await w0.sessions.get(SYSTEM_ACTOR, "se-on-w1")
    assert record.end_reason == "worker lost"

    await w1.started()  # the supervisor restarted it
    assert await w0.ready()
    await w1.stopped()
    listed = {n["name"]: n["state"] for n in await w0.listing()}
    assert listed == {"gw-w0": "live", "gw-w1": "stopped"}
    assert not await w0.ready()  # a stopped worker is not serving
    await cluster.timer.advance(timedelta(seconds=60))
    assert await w0.reap() == []  # a stopped node is never declared lost


async def test_a_wall_clock_step_alone_never_makes_a_live_node_lost(cluster: Cluster) -> None:
    """The heartbeat's time says silent, but this node has not watched it silent that long."""
    a, b = cluster.node("gw-a"), cluster.node("gw-b")
    await a.started()
    await b.started()
    await cluster.session_on(b, "se-stays")
    assert await a.reap() == []
    cluster.timer.step_wall(timedelta(hours=1))  # NTP, or an operator's date -s
    await a.beat()
    assert await a.reap() == []
    assert (await b.sessions.get(SYSTEM_ACTOR, "se-stays")).active
    await cluster.timer.advance(timedelta(seconds=31))  # now watched silent that long
    assert [name for name, _, _ in await a.reap()] == ["gw-b"]


async def test_nodes_that_do_not_share_the_clusters_keys_are_named(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    a, b, c = cluster.node("gw-a"), cluster.node("gw-b"), cluster.node("gw-c")
    keys = ((a, "SHA256:one", "k1"), (b, "SHA256:one", "k2"), (c, "SHA256:two", "k1"))
    for node, host_key, kid in keys:
        node.host_key, node.assertion_kid = host_key, kid
        await node.started()
    await a.reap()
    assert a.keys_warning == (
        "gw-c has another SSH host key than gw-a; gw-b has another assertion key than gw-a"
    )
    assert caplog.text.count("the cluster's nodes must share their keys") == 1
    await a.reap()  # told once, not at every beat
    assert caplog.text.count("the cluster's nodes must share their keys") == 1
    await b.stopped()
    await c.stopped()
    await a.reap()
    assert a.keys_warning == ""  # only live nodes count


async def test_readyz_warns_when_a_peer_has_other_keys(db_url: str, tmp_path: Path) -> None:
    """Two real nodes, each with the host and assertion keys its own data directory made."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = await start_test_node(db_url, tmp_path / "a", name="first")
    second = await start_test_node(db_url, tmp_path / "b", name="second", peer=first)
    try:
        for node in (first, second):
            await node.services.nodes.beat()
        await second.services.nodes.reap()
        url = f"http://127.0.0.1:{second.http_port}/readyz"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            body = await response.json()
        assert response.status == 200 and body["ready"] is True
        assert body["warnings"]["keys"] == (
            "first has another SSH host key than second; "
            "first has another assertion key than second"
        )
        fingerprint = asyncssh.read_private_key(first.config.host_key_path).get_fingerprint()
        (row,) = [r for r in await second.services.nodes.rows() if r.name == "first"]
        assert row.host_key == fingerprint and fingerprint.startswith("SHA256:")
    finally:
        await second.stop("test finished")
        await first.stop("test finished")
