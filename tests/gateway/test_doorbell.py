"""The SQLite doorbell: private, tolerant of dead followers, and deep paths work."""

from __future__ import annotations

import asyncio
import socket
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

from gateway.cluster.doorbell import Doorbell, directory_for, ring


def test_only_file_backed_sqlite_has_a_doorbell(tmp_path: Path) -> None:
    url = make_url(f"sqlite+aiosqlite:///{tmp_path / 'lockgate.db'}")
    assert directory_for(url) == tmp_path / ".lockgate.db.doorbell"
    assert directory_for(make_url("sqlite+aiosqlite:///:memory:")) is None
    assert directory_for(make_url("postgresql+asyncpg://postgres@127.0.0.1/test")) is None


async def test_ring_wakes_a_listener_in_a_deep_directory(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 100) / ("e" * 100)  # far past a Unix socket address's 108 bytes
    deep.mkdir(parents=True)
    directory = deep / ".lockgate.db.doorbell"
    rang = asyncio.Event()
    bell = Doorbell(directory)
    bell.listen(rang.set)
    try:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        ring(directory)
        await asyncio.wait_for(rang.wait(), 10)
    finally:
        bell.close()
    assert list(directory.iterdir()) == []


def test_ring_removes_a_dead_followers_socket_and_survives_a_missing_directory(
    tmp_path: Path,
) -> None:
    ring(tmp_path / "never-created")
    directory = tmp_path / "bell"
    directory.mkdir(mode=0o700)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(directory / "1-dead.sock"))
    dead.close()  # the file stays, nobody is bound: what a killed process leaves behind
    ring(directory)
    assert list(directory.iterdir()) == []
