"""Password checks cannot starve the gateway: argon2 runs in a bounded pool of threads, off
the event loop and outside any database transaction (the throttle: test_throttle.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import LoginBusy
from gateway.hashing import HashPool
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
