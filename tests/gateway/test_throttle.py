"""The login throttle on the database: lockouts with backoff per key, per-user and
per-address ceilings, counts shared by every node (each with its own engine)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import SessionMaker, create_engine, sessionmaker
from gateway.db.tables import metadata
from gateway.throttle import FORGET, Throttle


class Now:
    def __init__(self) -> None:
        self.at = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **kw: float) -> None:
        self.at += timedelta(**kw)


@pytest.fixture
async def tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


@pytest.fixture
def now() -> Now:
    return Now()


@pytest.fixture
def throttle(tables: None, maker: SessionMaker, now: Now) -> Throttle:
    return Throttle(5, now, maker)


async def test_lockout_and_backoff(tables: None, maker: SessionMaker, now: Now) -> None:
    t = Throttle(3, now, maker)
    pair = "pair:alice|1.2.3.4"
    for _ in range(2):
        await t.failed(pair)
    assert not await t.blocked(pair)
    await t.failed(pair)
    assert await t.blocked(pair)
    assert not await t.blocked("pair:bob|1.2.3.4", "pair:alice|5.6.7.8")
    now.advance(seconds=31)
    assert not await t.blocked(pair)
    await t.failed(pair)  # the fourth failure doubles the lockout
    now.advance(seconds=31)
    assert await t.blocked(pair)
    now.advance(seconds=30)
    assert not await t.blocked(pair)
    await t.succeeded(pair)
    await t.failed(pair)
    assert not await t.blocked(pair)


async def test_a_stranger_locks_only_their_own_address_out_of_an_account(
    throttle: Throttle, now: Now
) -> None:
    t = throttle
    stranger = t.login_keys("alice", "203.0.113.9")
    for _ in range(5):
        await t.failed(*stranger)
    assert await t.blocked(*stranger)
    assert not await t.blocked(*t.login_keys("alice", "10.1.2.3"))  # alice at her desk
    # Backoff doubles for the stranger and is forgotten only after success or time.
    now.advance(seconds=31)
    assert not await t.blocked(*stranger)
    await t.failed(*stranger)
    now.advance(seconds=31)
    assert await t.blocked(*stranger)


async def test_a_distributed_guess_hits_the_per_user_ceiling_far_above_one_address(
    throttle: Throttle,
) -> None:
    t = throttle
    for i in range(99):
        await t.failed(*t.login_keys("alice", f"198.51.100.{i}"))
    assert not await t.blocked(*t.login_keys("alice", "10.1.2.3"))
    await t.failed(*t.login_keys("alice", "198.51.100.200"))
    assert await t.blocked(*t.login_keys("alice", "10.1.2.3"))  # 100 = 20 x 5: everyone
    await t.succeeded(*t.login_keys("alice", "10.1.2.3"))
    assert await t.blocked(*t.login_keys("alice", "10.1.2.3"))  # one success: no reset


async def test_one_address_spraying_names_is_stopped(throttle: Throttle) -> None:
    t = throttle
    for i in range(20):
        await t.failed(*t.login_keys(f"user{i}", "203.0.113.9"))
    assert await t.blocked(*t.login_keys("someone-else", "203.0.113.9"))
    assert not await t.blocked(*t.login_keys("someone-else", "203.0.113.10"))


async def test_concurrent_failures_on_two_nodes_all_count(
    tables: None, db_url: str, now: Now
) -> None:
    engines = [create_engine(db_url), create_engine(db_url)]
    try:
        a, b = (Throttle(5, now, sessionmaker(e)) for e in engines)
        keys = a.login_keys("alice", "203.0.113.9")
        # Ten failures at once, half through each node's own engine: every one is counted
        # (a lost update would leave the pair below its limit of five... or the user's).
        await asyncio.gather(*(t.failed(*keys) for t in (a, b) * 5))
        assert await a.blocked(*keys) and await b.blocked(*keys)
        for _ in range(89):
            await b.failed(*b.login_keys("alice", "198.51.100.7"))
        assert not await b.blocked(*b.login_keys("alice", "10.1.2.3"))
        await a.failed(*a.login_keys("alice", "198.51.100.8"))  # the 100th, on the other node
        assert await b.blocked(*b.login_keys("alice", "10.1.2.3"))
    finally:
        for e in engines:
            await e.dispose()


async def test_quiet_keys_are_forgotten_and_pruned(
    throttle: Throttle, maker: SessionMaker, now: Now
) -> None:
    import sqlalchemy as sa

    from gateway.db.tables import login_throttle

    await throttle.failed(*throttle.login_keys("alice", "203.0.113.9"))
    now.advance(seconds=(FORGET + timedelta(minutes=11)).total_seconds())
    await throttle.failed("pair:bob|198.51.100.1")  # a later failure prunes the quiet rows
    async with maker() as db:
        keys = set((await db.execute(sa.select(login_throttle.c.key))).scalars())
    assert keys == {"pair:bob|198.51.100.1"}
