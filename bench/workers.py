"""One worker against one per core, in one run: ``python -m bench.ssh --workers N``.

For ``server.workers = 1`` and ``= N`` in turn, a fresh gateway (``bench.ssh.Setup``) is
measured on: keystroke echo of ``--sessions`` typing sessions (10 keys/s each), p50/p99
added to direct sshd's; aggregate throughput of 8 parallel exec transfers, through the
gateway and straight to sshd (what the machine gives without it); and the kill
latency of ``--kills`` sessions ended by a terminate published from another process (the
way a kill issued on another node arrives: through the database's notification, to
whichever worker holds the session), p50/p99. Not a test: prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.ssh import Rows, Setup, keystrokes, pct, wait_indexed

TRANSFERS = 8
TRANSFER_MB = 100


def aggregate(s: Setup, gateway: bool) -> float:
    """MB/s of ``TRANSFERS`` exec transfers running at once."""
    argv = [*s.ssh(gateway, "-c", "aes128-gcm@openssh.com"), f"head -c {TRANSFER_MB}M /dev/zero"]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(TRANSFERS)
    ]
    for proc in procs:
        proc.wait()
    return TRANSFERS * TRANSFER_MB / (time.perf_counter() - start)


async def kills(s: Setup, rounds: int) -> list[float]:
    import sqlalchemy as sa

    from gateway.cluster.bus import ClusterBus
    from gateway.config import load_config
    from gateway.db.tables import sessions
    from gateway.services import open_services

    services = await open_services(load_config(s.config))
    bus = ClusterBus(services.maker, "bench-other-node")
    samples = []
    try:
        for _ in range(rounds):
            conn = await s.client(True)
            proc = await conn.create_process("echo up; sleep 600")
            await proc.stdout.readline()
            async with services.maker() as db:
                sid = (
                    await db.execute(
                        sa.select(sessions.c.id)
                        .where(sessions.c.ended_at.is_(None))
                        .order_by(sessions.c.started_at.desc())
                        .limit(1)
                    )
                ).scalar_one()
            start = time.perf_counter()
            await bus.send("terminate", {"session": sid, "reason": "bench"})
            await proc.wait_closed()
            samples.append((time.perf_counter() - start) * 1000)
            conn.close()
    finally:
        await services.aclose()
    return samples


async def database(url: str, name: str, *, drop: bool = False) -> str:
    """A fresh PostgreSQL database ``name`` on ``url``'s server (each run its own)."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    admin = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    async with admin.connect() as conn:
        await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if not drop:
            await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def measure(workers: int, args: argparse.Namespace, rows: Rows) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="lockgate-bench-w-"))
    work.chmod(0o755)
    name = f"lockgate_bench_workers_{workers}"
    url = await database(args.database_url, name) if args.database_url else None
    s = Setup(work, url)
    s.env["LOCKGATE_SERVER_WORKERS"] = str(workers)
    s.start()
    try:
        await asyncio.sleep(2)  # every worker up and beating
        direct = await keystrokes(s, False, args.sessions, 20)
        via = await keystrokes(s, True, args.sessions, 20)
        await wait_indexed(s)
        alone = statistics.median(aggregate(s, False) for _ in range(2))
        through = statistics.median(aggregate(s, True) for _ in range(2))
        await wait_indexed(s)
        killed = await kills(s, args.kills)
    except Exception:
        print((work / "serve.log").read_text()[-3000:])
        raise
    finally:
        s.stop()
        shutil.rmtree(work, ignore_errors=True)
        if args.database_url:
            await database(args.database_url, name, drop=True)
    figures = {
        "p50": pct(via, 0.5) - pct(direct, 0.5),
        "p99": pct(via, 0.99) - pct(direct, 0.99),
        "mbs": through,
        "kill50": pct(killed, 0.5),
        "kill99": pct(killed, 0.99),
    }
    label = f"{workers} worker{'s' if workers > 1 else ''}"
    rows.append(
        (
            f"{args.sessions} typing sessions, keystroke p50 / p99 added ({label})",
            f"{pct(direct, 0.5):.2f} / {pct(direct, 0.99):.2f} ms",
            f"{pct(via, 0.5):.2f} / {pct(via, 0.99):.2f} ms",
            f"{figures['p50']:+.2f} / {figures['p99']:+.2f} ms",
        )
    )
    rows.append((f"{TRANSFERS} parallel exec transfers, aggregate ({label})",
                 f"{alone:.0f} MB/s", f"{through:.0f} MB/s", f"{through / alone:.2f}"))  # fmt: skip
    rows.append(
        (
            f"kill from another process, p50 / p99 of {args.kills} ({label})",
            "-",
            f"{figures['kill50']:.0f} / {figures['kill99']:.0f} ms",
            "-",
        )
    )
    return figures


async def compare(args: argparse.Namespace) -> None:
    many = args.workers or (os.cpu_count() or 1)
    rows = Rows()
    one = await measure(1, args, rows)
    per_core = await measure(many, args, rows)
    rows.append(
        (
            f"aggregate throughput, {many} workers / 1",
            "-",
            f"{per_core['mbs'] / one['mbs']:.2f}x",
            "-",
        )
    )
    rows.table()
