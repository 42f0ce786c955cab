"""Password checks cannot starve the gateway: argon2 runs in a bounded pool of threads, off
the event loop and outside any database transaction; the throttle is per (user, address)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import LoginBusy
from gateway.hashing import HashPool
from gateway.throttle import Throttle
from policy.passwords import hash_password
from policy.service import SYSTEM_ACTOR, PolicyService
from policy.tables import metadata as policy_tables
from tests.libdb import AuditLog, SessionMaker, create_tables


async def _policy(engine: AsyncEngine, maker: SessionMaker, **kw: object) -> PolicyService:
    await create_tables(engine, policy_tables)
    audit = await AuditLog.create(engine, maker)
    svc = PolicyService(maker, [], audit, **kw)  # type: ignore[arg-type]
    await svc.add_user(SYSTEM_ACTOR, "alice", roles=["dev"], password="alice-long-password")
    return svc


async def test_a_password_check_leaves_the_event_loop_running(
    engine: AsyncEngine, maker: SessionMaker
) -> None:
    svc = await _policy(engine, maker)
    ticks = 0
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.ensure_future(tick())
    await asyncio.sleep(0)
    start = ticks
    assert await svc.verify_password("alice", "wrong-password-123") is None
    during = ticks - start
    done.set()
    await ticker
    assert during > 10  # the loop went on while argon2 ran (0 when it ran on the loop)


async def test_no_database_connection_is_held_while_a_password_is_checked(
    engine: AsyncEngine, maker: SessionMaker
) -> None:
    held: list[int] = []

    async def probe(stored: str | None, password: str) -> bool:
        held.append(engine.pool.checkedout())
        return False

    svc = await _policy(engine, maker, password_check=probe)
    assert await svc.verify_password("alice", "alice-long-password") is None
    assert await svc.verify_password("nobody", "whatever-password") is None
    assert held == [0, 0]


async def test_the_pool_refuses_at_once_beyond_its_queue_and_keeps_running_checks_counted() -> None:
    release = threading.Event()

    def slow(stored: str | None, password: str) -> bool:
        release.wait(30)
        return password == "right"

    pool = HashPool(1, 2, check=slow)
    try:
        waiting = [asyncio.ensure_future(pool.verify(None, "right")) for _ in range(3)]
        await asyncio.sleep(0)
        assert pool.pending == 3
        with pytest.raises(LoginBusy):
            await pool.verify(None, "right")
        # A client that goes away while its check runs keeps the place until it has run;
        # one still waiting for a thread gives it up (its check will not run).
        waiting[0].cancel()
        await asyncio.sleep(0)
        assert pool.pending == 3 and pool.refused == 1
        waiting[2].cancel()
        await asyncio.sleep(0)
        assert pool.pending == 2
        release.set()
        assert await waiting[1] is True
        for _ in range(100):
            if pool.pending == 0:
                break
            await asyncio.sleep(0.01)
        assert pool.pending == 0
        assert await pool.verify(None, "wrong") is False
    finally:
        release.set()
        pool.close()


def test_a_real_argon2_check_runs_in_the_pool() -> None:
    async def run() -> tuple[bool, bool]:
        pool = HashPool(1, 0)
        try:
            stored = hash_password("the-right-password")
            return await pool.verify(stored, "the-right-password"), await pool.verify(
                stored, "a-wrong-password"
            )
        finally:
            pool.close()

    assert asyncio.run(run()) == (True, False)


def test_a_stranger_locks_only_their_own_address_out_of_an_account() -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    t = Throttle(5, lambda: now[0])
    stranger = t.login_keys("alice", "203.0.113.9")
    for _ in range(5):
        t.failed(*stranger)
    assert t.blocked(*stranger)
    assert not t.blocked(*t.login_keys("alice", "10.1.2.3"))  # alice at her desk
    # Backoff doubles for the stranger and is forgotten only after success or time.
    now[0] += timedelta(seconds=31)
    assert not t.blocked(*stranger)
    t.failed(*stranger)
    now[0] += timedelta(seconds=31)
    assert t.blocked(*stranger)


def test_a_distributed_guess_hits_the_per_user_ceiling_far_above_one_address() -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    t = Throttle(5, lambda: now[0])
    for i in range(99):
        t.failed(*t.login_keys("alice", f"198.51.100.{i}"))
    assert not t.blocked(*t.login_keys("alice", "10.1.2.3"))
    t.failed(*t.login_keys("alice", "198.51.100.200"))
    assert t.blocked(*t.login_keys("alice", "10.1.2.3"))  # 100 = 20 x 5: everyone, for a while
    t.succeeded(*t.login_keys("alice", "10.1.2.3"))
    assert t.blocked(*t.login_keys("alice", "10.1.2.3"))  # one success does not reset it


def test_one_address_spraying_names_is_stopped() -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    t = Throttle(5, lambda: now[0])
    for i in range(20):
        t.failed(*t.login_keys(f"user{i}", "203.0.113.9"))
    assert t.blocked(*t.login_keys("someone-else", "203.0.113.9"))
    assert not t.blocked(*t.login_keys("someone-else", "203.0.113.10"))
