"""Index slots are shared by every process of a host: no more holders than slots, and a
slot is free again when its holder lets go (the kernel drops a dead holder's lock)."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

from recorder.slots import HostSlots


async def test_two_workers_share_one_bound(tmp_path: Path) -> None:
    # Two HostSlots on one directory, as two worker processes would have.
    first, second = HostSlots(tmp_path, 1), HostSlots(tmp_path, 1)
    order: list[str] = []
    release = asyncio.Event()

    async def hold(slots: HostSlots, name: str, until: asyncio.Event | None) -> None:
        async with slots.slot():
            order.append(f"{name} in")
            if until is not None:
                await until.wait()
            order.append(f"{name} out")

    holder = asyncio.ensure_future(hold(first, "a", release))
    while order != ["a in"]:
        await asyncio.sleep(0)
    waiter = asyncio.ensure_future(hold(second, "b", None))
    # the slot's lock file is held: a third party cannot take it either
    fd = os.open(tmp_path / "slot-0.lock", os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            taken = True
        except BlockingIOError:
            taken = False
        assert not taken
    finally:
        os.close(fd)
    assert order == ["a in"]  # b waits
    release.set()
    await asyncio.gather(holder, waiter)
    assert order == ["a in", "a out", "b in", "b out"]
