"""Recorder costs, measured. Not a test: prints a table.

    python -m bench.recorder [--size-mb 1024] [--hours 8]

1. the hot path: ``SessionRecording.output()`` calls/s and MB/s into a real file;
2. the indexer (the worker-process function) on plain, coloured and full-screen streams;
3. seeking in a synthetic recording of ``--hours`` hours and ``--size-mb`` MB: keyframe
   lookup in SQLite plus replay to the moment, at random points;
   and a web session of ``--requests`` requests indexed by the worker process: its time,
   the worker's peak memory and this process's before and after (the index is read back
   in batches);
4. saving the sealed index of a web session of ``--requests`` requests (a screen line and a
   timeline event each) over an earlier index of it, while another writer commits a small
   transaction every 10 ms: how long the save takes and how long that writer waits at most,
   against its wait with no save running.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from gateway.db import SessionMaker, create_engine, sessionmaker
from gateway.db.schema import upgrade
from recorder.http import HttpExchange
from recorder.indexer import IndexResult, index_file
from recorder.recorder import Recorder
from recorder.replay import frame_at
from recorder.store import RecordingStore
from recorder.tables import recordings

PLAIN = b"".join(b"%06d the quick brown fox jumps over the lazy dog\r\n" % i for i in range(2000))
COLOURED = b"".join(
    b"\x1b[01;34mdir%04d\x1b[0m  \x1b[01;32mrun%04d.sh\x1b[0m  file%04d.txt\r\n" % (i, i, i)
    for i in range(2000)
)
FULLSCREEN = b"".join(
    b"\x1b[H\x1b[2J"
    + b"".join(
        b"\x1b[%d;1H\x1b[7m%5d root  20 0 %6d S %4.1f\x1b[0m" % (row, 1000 + row, row * 37, row / 3)
        for row in range(1, 24)
    )
    for _ in range(60)
)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def _writes_during(maker: SessionMaker, work: Awaitable[Any]) -> list[float]:
    """Milliseconds each small write transaction took, one every 10 ms while ``work`` runs."""
    task = asyncio.ensure_future(work)
    waits = []
    while not task.done():
        start = time.perf_counter()
        async with maker() as db, db.begin():
            await db.execute(
                recordings.update().where(recordings.c.session_id == "hot").values(end_reason="x")
            )
        waits.append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(0.01)
    await task
    return waits


def _p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99)]


def _status_mb(pid: int | str, field: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(x.split()[1]) for x in f if x.startswith(field)) / 1024
    except (OSError, StopIteration):  # gone, or a zombie
        return 0.0


def _rss_mb() -> float:
    return _status_mb("self", "VmRSS:")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--requests", type=int, default=200_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lockgate-recbench-"))
    engine = create_engine(f"sqlite+aiosqlite:///{work / 'db.sqlite'}")
    await upgrade(engine)
    maker = sessionmaker(engine)
    rows: list[tuple[str, str]] = []

    # 1. hot path
    recorder = Recorder(work / "rec", maker)
    rec = await recorder.start("hot", meta={}, width=120, height=40)
    packet = PLAIN[:4096]
    n = 50_000
    start = time.perf_counter()
    for _ in range(n):
        rec.output(packet)
    rec.flush()
    spent = time.perf_counter() - start
    await rec.close("done")
    rows.append(
        (
            "output() on the data path, 4 KB packets",
            f"{n / spent:,.0f} calls/s = {n * len(packet) / spent / 1e6:.0f} MB/s "
            f"({spent / n * 1e6:.1f} us per packet)",
        )
    )

    # 2. indexer throughput
    for name, sample in (
        ("plain text", PLAIN),
        ("coloured ls", COLOURED),
        ("full-screen (top-like)", FULLSCREEN),
    ):
        rec = await recorder.start(f"ix-{name[:4]}", meta={}, width=120, height=40)
        total = 0
        while total < 32 * 1024 * 1024:
            rec.output(sample[:16384])
            sample = sample[16384:] + sample[:16384]
            total += 16384
        await rec.close("done")
        start = time.perf_counter()
        index_file(str(rec.path))
        spent = time.perf_counter() - start
        rows.append((f"indexer, {name}, 32 MB", f"{total / spent / 1e6:.1f} MB/s"))

    # 2b. a web session's recording, indexed by the worker process
    web_store = RecordingStore(work / "rec", maker)
    rec = await recorder.start("web", meta={}, width=120, height=40)
    for i in range(args.requests):
        rec.http_exchange(HttpExchange("GET", f"/api/items/{i}", 200, 0, 1024, 0.001, True))
        if i % 1000 == 0:
            rec.flush()
            await asyncio.sleep(0)
    await rec.close("done")
    own_before = _rss_mb()
    start = time.perf_counter()
    indexing = asyncio.ensure_future(web_store.index("web"))
    worker = 0.0
    while not indexing.done():
        # VmHWM: the worker's own peak, after its exec (a child's ru_maxrss also counts
        # the parent's memory it started from)
        for proc in list(web_store._children):
            worker = max(worker, _status_mb(proc.pid, "VmHWM:"))
        await asyncio.sleep(0.01)
    await indexing
    spent = time.perf_counter() - start
    await web_store.aclose()
    rows.append(
        (
            f"indexing a web session of {args.requests:,} requests "
            f"({rec.path.stat().st_size / 1e6:.0f} MB), worker process",
            f"{spent:.1f} s; worker peak RSS {worker:.0f} MB; this process "
            f"{own_before:.0f} -> {_rss_mb():.0f} MB",
        )
    )

    # 3. seek in a long recording
    clock = FakeClock()
    long_rec = Recorder(work / "rec", maker, clock=clock)
    rec = await long_rec.start("long", meta={}, width=120, height=40)
    target = args.size_mb * 1024 * 1024
    step = args.hours * 3600 / (target / 4096)
    written = 0
    start = time.perf_counter()
    samples = (PLAIN, COLOURED, FULLSCREEN)
    i = 0
    while written < target:
        clock.t += step
        chunk = samples[(i // 2000) % 3][(i * 4096) % 60000 : (i * 4096) % 60000 + 4096]
        rec.output(chunk or PLAIN[:4096])
        written += len(chunk or PLAIN[:4096])
        i += 1
    await rec.close("done")
    rows.append(
        (
            f"writing the {args.hours:g} h, {args.size_mb} MB recording",
            f"{time.perf_counter() - start:.1f} s",
        )
    )
    store = RecordingStore(work / "rec", maker)
    start = time.perf_counter()
    await store.index("long")
    rows.append(("indexing it (worker process)", f"{time.perf_counter() - start:.1f} s"))
    await store.aclose()
    seeks = []
    rng = random.Random(7)
    for _ in range(30):
        t = rng.uniform(0, args.hours * 3600)
        start = time.perf_counter()
        keyframe = await store.keyframe_before("long", t)
        frame_at(str(rec.path), keyframe, t)
        seeks.append((time.perf_counter() - start) * 1000)
    rows.append(
        (
            "seek to a random moment (30 tries)",
            f"median {statistics.median(seeks):.0f} ms, max {max(seeks):.0f} ms",
        )
    )

    # 4. a big sealed index saved over an earlier one, with another writer going on
    size = (await store.get("long")).size
    web = IndexResult(
        120, 40, 1.0, [], [(i / 10, "screen", f"GET /api/items/{i}") for i in range(args.requests)],
        [(i / 10, "http", {"method": "GET", "status": 200}) for i in range(args.requests)],
        0, size,
    )  # fmt: skip
    await store.saves.sealed("long", web, size)
    quiet = await _writes_during(maker, asyncio.sleep(2))
    store = RecordingStore(work / "rec", maker)
    start = time.perf_counter()
    busy = await _writes_during(maker, store.saves.sealed("long", web, size))
    spent = time.perf_counter() - start
    await store.aclose()
    rows.append(
        (
            f"sealed index of {args.requests:,} requests saved over the last one",
            f"{spent:.1f} s",
        )
    )
    rows.append(
        (
            "  another writer's wait during it (every 10 ms)",
            f"p99 {_p99(busy):.0f} ms, max {max(busy):.0f} ms "
            f"(with no save: p99 {_p99(quiet):.0f} ms, max {max(quiet):.0f} ms)",
        )
    )
    await engine.dispose()
    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        print(f"{label.ljust(width)}  {value}")


if __name__ == "__main__":
    asyncio.run(main())
