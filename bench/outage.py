"""Sessions across a database outage. Not a test: prints what happened and how fast.

    python -m bench.outage --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres
        [--quick] [--sessions 50] [--outage 10] [--no-cut]

Creates a fresh PostgreSQL database, puts a TCP proxy between it and ``lockgate serve`` (as
``bench.ssh`` starts it; root needed for its sshd), opens sessions, cuts the proxy, ends the
sessions and tries new ones while the database is away, restores the proxy, and measures how
long the node takes to write everything it owed and to carry out a kill again.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import asyncssh
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from bench.ssh import PY, Setup, sh
from tests.dbproxy import TcpProxy


async def scalar(url: str, sql: str) -> int:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(sa.text(sql))).scalar_one())
    finally:
        await engine.dispose()


async def until(check: object, limit: float = 120.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        if await check():  # type: ignore[operator]
            return time.perf_counter() - start
        await asyncio.sleep(0.05)
    return float("nan")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True, help="a PostgreSQL server (admin URL)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--outage", type=float, default=10.0, help="seconds")
    parser.add_argument("--no-cut", action="store_true", help="the same without an outage")
    args = parser.parse_args()
    sessions = min(args.sessions, 20) if args.quick else args.sessions
    outage = min(args.outage, 5.0) if args.quick else args.outage
    admin = make_url(args.database_url)
    name = f"lg_outage_{uuid.uuid4().hex[:8]}"
    admin_engine = create_async_engine(admin, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    async with admin_engine.connect() as conn:
        await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    direct = admin.set(database=name).render_as_string(hide_password=False)
    proxy = await TcpProxy(admin.host or "127.0.0.1", admin.port or 5432).start()
    proxied = admin.set(database=name, host="127.0.0.1", port=proxy.port)
    work = Path(tempfile.mkdtemp(prefix="lockgate-outage-"))
    work.chmod(0o755)
    s = Setup(work, proxied.render_as_string(hide_password=False))
    try:
        # In a thread: the proxy runs on this event loop, which must keep turning meanwhile.
        await asyncio.to_thread(s.start)
        cli = (PY, "-m", "gateway")
        conf = ("--config", str(s.config))
        await asyncio.to_thread(sh, *cli, "user", "add", "ada", "--role", "admin", *conf, env=s.env)
        made = await asyncio.to_thread(sh, *cli, "token", "create", "ada", *conf, env=s.env)
        token = made.split()[0]
        conns = [await s.client(True) for _ in range(sessions)]
        procs = [await c.create_process("sleep 600") for c in conns]
        victim_conn = await s.client(True)
        # Running on the target (its channel authorized and bridged) before the cut.
        victim = await victim_conn.create_process("echo ready; exec sleep 600")
        await victim.stdout.readline()
        opened = await scalar(direct, "SELECT count(*) FROM gw_sessions")
        live = "SELECT count(*) FROM gw_sessions WHERE ended_at IS NULL"
        print(f"{sessions + 1} live sessions; cutting the database for {outage:.0f} s")
        if not args.no_cut:
            proxy.cut()
        cut_at = time.perf_counter()
        for proc in procs:
            proc.close()
        for c in conns:
            c.close()
        refused_in = time.perf_counter()
        try:
            async with asyncio.timeout(30):
                await s.client(True)
            refused = "a new session was accepted?!"
        except asyncssh.PermissionDenied:
            refused = "refused"
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            refused = f"failed ({type(exc).__name__})"
        refused_in = time.perf_counter() - refused_in
        await asyncio.sleep(max(0.0, outage - (time.perf_counter() - cut_at)))
        proxy.restore()
        restored = time.perf_counter()
        replayed = await until(lambda: _ended(direct, live, 1))
        owed_left = await until(lambda: _owed(s.http_port, 0), 30.0)
        print(f"new session during the outage: {refused} after {refused_in:.2f} s")
        print(f"{sessions} sessions ended during the outage: recorded {replayed:.2f} s after the "
              "database returned")  # fmt: skip
        sealed = await scalar(
            direct, "SELECT count(*) FROM rec_recordings WHERE sha256 IS NOT NULL"
        )
        ends = await scalar(
            direct, "SELECT count(*) FROM gw_audit_events WHERE action = 'session.end'"
        )
        print(f"recordings sealed: {sealed}; session.end audit events: {ends}")
        print("end reasons:", await _reasons(direct))
        ended = await scalar(direct, "SELECT count(*) FROM gw_sessions WHERE ended_at IS NOT NULL")
        drained = f"after {owed_left:.2f} s" if owed_left == owed_left else "NEVER"
        print(
            f"sessions opened {opened}, ended {ended} (expected {sessions}); nothing owed {drained}"
        )
        if ended != sessions or sealed != sessions or ends != sessions:
            print("!! something owed was lost:", await _lost(direct))
        if victim.exit_status is not None:
            print("!! the session kept open across the outage ended too")
        base = f"http://127.0.0.1:{s.http_port}/api/v1"
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            fresh = await s.client(True)
            held = await fresh.create_process("sleep 600")
            await asyncio.sleep(0.5)
            async with http.get(f"{base}/sessions?active=true") as response:
                live_ids = [x["id"] for x in await response.json() if x["ended_at"] is None]
            start = time.perf_counter()
            for session_id in live_ids:
                async with http.post(
                    f"{base}/sessions/{session_id}/terminate", json={"reason": "bench"}
                ):
                    pass
            await held.wait_closed()
            took = 1000 * (time.perf_counter() - start)
            since = time.perf_counter() - restored
            print(f"a kill after the outage: {took:.0f} ms ({since:.1f} s after the return)")
    finally:
        await asyncio.to_thread(s.stop)
        await proxy.close()
        async with admin_engine.connect() as conn:
            await conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        await admin_engine.dispose()


async def _reasons(url: str) -> list[tuple[str, int]]:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            sql = "SELECT end_reason, count(*) FROM gw_sessions GROUP BY end_reason"
            return [(str(r[0]), int(r[1])) for r in (await conn.execute(sa.text(sql))).all()]
    finally:
        await engine.dispose()


async def _owed(http_port: int, want: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{http_port}/metrics") as response,
        ):
            text = await response.text()
    except (OSError, aiohttp.ClientError):
        return False
    for line in text.splitlines():
        if line.startswith("lockgate_db_writes_owed "):
            return float(line.split()[1]) <= want
    return False


async def _lost(url: str) -> list[tuple[str, ...]]:
    engine = create_async_engine(url, poolclass=NullPool)
    sql = (
        "SELECT s.id, coalesce(s.end_reason, 'LIVE'), coalesce(r.sha256, 'UNSEALED'),"
        " (SELECT count(*) FROM gw_audit_events e WHERE e.subject = s.id"
        "  AND e.action = 'session.end') FROM gw_sessions s"
        " LEFT JOIN rec_recordings r ON r.session_id = s.id"
        " WHERE s.ended_at IS NULL OR r.sha256 IS NULL OR NOT EXISTS (SELECT 1 FROM"
        " gw_audit_events e WHERE e.subject = s.id AND e.action = 'session.end')"
    )
    try:
        async with engine.connect() as conn:
            return [tuple(str(c) for c in r) for r in (await conn.execute(sa.text(sql))).all()]
    finally:
        await engine.dispose()


async def _ended(url: str, live_sql: str, remaining: int) -> bool:
    try:
        return await scalar(url, live_sql) <= remaining
    except Exception:
        return False


if __name__ == "__main__":
    asyncio.run(main())
