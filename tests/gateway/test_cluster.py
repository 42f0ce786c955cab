"""Cross-node events: every node sees each event once, across processes' engines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.cluster.bus import ClusterBus, ClusterEvent
from gateway.db import SessionMaker, create_engine, sessionmaker
from gateway.db.tables import metadata


@pytest.fixture
async def tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


async def test_events_reach_every_node_once(tables: None, db_url: str) -> None:
    # Two nodes with their own engines on the same database, as two processes would have.
    engines = [create_engine(db_url), create_engine(db_url)]
    buses = [ClusterBus(sessionmaker(e), node=f"node{i}") for i, e in enumerate(engines)]
    seen: dict[str, list[ClusterEvent]] = {"node0": [], "node1": []}
    for bus in buses:

        async def handler(event: ClusterEvent, name: str = bus.node) -> None:
            seen[name].append(event)

        bus.subscribe(handler)
        await bus.start()
        await bus.stop()  # drive polling by hand: deterministic, no timers
    try:
        await buses[0].send("terminate", {"session": "s1", "reason": "admin"})
        await buses[1].send("recheck", {"grant": "g1"})
        for bus in buses:
            assert await bus.poll_once() == 2
            assert await bus.poll_once() == 0  # nothing twice
        for name in seen:
            assert [(e.kind, dict(e.payload)) for e in seen[name]] == [
                ("terminate", {"reason": "admin", "session": "s1"}),
                ("recheck", {"grant": "g1"}),
            ]
            assert seen[name][0].origin == "node0"
    finally:
        for e in engines:
            await e.dispose()


async def test_events_before_start_are_not_replayed(tables: None, maker: SessionMaker) -> None:
    now = [datetime(2026, 1, 1, 12, tzinfo=UTC)]
    old = ClusterBus(maker, node="a", clock=lambda: now[0] - timedelta(minutes=10))
    await old.send("terminate", {"session": "gone"})
    bus = ClusterBus(maker, node="b", clock=lambda: now[0])
    got: list[ClusterEvent] = []

    async def handler(event: ClusterEvent) -> None:
        got.append(event)

    bus.subscribe(handler)
    await bus.start()
    await bus.stop()
    assert await bus.poll_once() == 0
    await bus.send("terminate", {"session": "live"})
    assert await bus.poll_once() == 1
    assert got[0].payload == {"session": "live"}


async def test_failing_handler_does_not_stop_others(tables: None, maker: SessionMaker) -> None:
    bus = ClusterBus(maker, node="n")
    got: list[str] = []

    async def broken(event: ClusterEvent) -> None:
        raise RuntimeError("boom")

    async def good(event: ClusterEvent) -> None:
        got.append(event.kind)

    bus.subscribe(broken)
    bus.subscribe(good)
    await bus.start()
    await bus.stop()
    await bus.send("recheck", {})
    await bus.poll_once()
    assert got == ["recheck"]


async def test_running_follower_delivers(tables: None, db_url: str) -> None:
    """The live path: a LISTEN/NOTIFY wake-up on PostgreSQL, the doorbell on SQLite. The
    follower's backstop poll is an hour away, so only the wake-up can deliver in time."""
    import asyncio

    sender_engine, follower_engine = create_engine(db_url), create_engine(db_url)
    follower = ClusterBus(sessionmaker(follower_engine), node="follower", poll_interval=3600)
    arrived = asyncio.Event()

    async def handler(event: ClusterEvent) -> None:
        if event.payload.get("session") == "s9":
            arrived.set()

    follower.subscribe(handler)
    await follower.start()
    try:
        await ClusterBus(sessionmaker(sender_engine), node="sender").send(
            "terminate", {"session": "s9"}
        )
        await asyncio.wait_for(arrived.wait(), timeout=30)
    finally:
        await follower.stop()
        await sender_engine.dispose()
        await follower_engine.dispose()
