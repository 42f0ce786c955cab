"""The journal of owed writes on its own: a write the database refuses or does not take in
time is owed, durable on disk, replayed in order, and a failure stops the replay without
losing what follows."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.owed import OwedWrites


async def test_writes_refused_or_stuck_are_owed_and_replayed_in_order(tmp_path: Path) -> None:
    path = tmp_path / "owed.jsonl"
    owed = OwedWrites(path)
    owed.patience = 0.05
    written: list[int] = []
    down = True
    stuck = asyncio.Event()

    async def apply(payload: Mapping[str, Any]) -> None:
        if payload.get("stuck"):
            await stuck.wait()  # a database that does not answer (a blackholed network)
        if down:
            raise ConnectionError("database away")
        if payload["n"] not in written:  # idempotent, as every kind's apply must be
            written.append(int(payload["n"]))

    owed.register("thing", apply)
    assert not await owed.write("thing", {"n": 1})
    assert not await owed.write("thing", {"n": 2, "stuck": True})
    assert owed.count == 2
    # Durable: a node starting on this data directory finds both.
    assert OwedWrites(path).count == 2
    assert await owed.replay() == 0 and owed.count == 2
    down = False
    assert await owed.write("thing", {"n": 3})
    stuck.set()  # the stuck attempt finishes late: the replay then finds it done
    await asyncio.gather(*list(owed._trying))
    assert written == [3, 2]
    assert await owed.replay() == 2 and owed.count == 0
    assert written == [3, 2, 1]
    assert OwedWrites(path).count == 0


async def test_an_unknown_kind_stops_the_replay_and_keeps_what_follows(tmp_path: Path) -> None:
    path = tmp_path / "owed.jsonl"
    first = OwedWrites(path)
    await first.owe("gone", {"n": 1})
    await first.owe("thing", {"n": 2})
    again = OwedWrites(path)
    seen: list[Mapping[str, Any]] = []

    async def apply(payload: Mapping[str, Any]) -> None:
        seen.append(payload)

    again.register("thing", apply)
    assert await again.replay() == 0 and again.count == 2 and seen == []
    assert again.owed_ids("thing", "n") == {"2"}
