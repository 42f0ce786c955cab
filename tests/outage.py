"""A database outage a test can start and end, on either backend, with real parts: for
PostgreSQL a TCP proxy between node and server that is cut (``tests.dbproxy``); for SQLite
another process holding the database's write lock (a backup tool or a ``sqlite3`` shell left
inside a transaction), so that every write the node tries waits out its lock timeout and
fails, while reads still work (WAL)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.dbproxy import TcpProxy
from tests.libdb import fresh_database

SQLITE_LOCK_TIMEOUT = 1.0  # seconds the node's SQLite writes wait for the lock (?timeout=)
_LOCKER = (
    "import sqlite3, sys\n"
    "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "db.execute('BEGIN IMMEDIATE')\n"
    "print('locked', flush=True)\n"
    "sys.stdin.readline()\n"
    "db.execute('ROLLBACK')\n"
)


class Outage:
    """``url`` is what the node is given; ``direct`` reaches the database during the outage
    for reads (PostgreSQL: around the proxy)."""

    def __init__(self, url: str, direct: str) -> None:
        self.url = url
        self.direct = direct

    async def cut(self) -> None:
        raise NotImplementedError

    async def restore(self) -> None:
        raise NotImplementedError


class ProxyCut(Outage):
    def __init__(self, url: str, direct: str, proxy: TcpProxy) -> None:
        super().__init__(url, direct)
        self.proxy = proxy

    async def cut(self) -> None:
        self.proxy.cut()

    async def restore(self) -> None:
        self.proxy.restore()


class SqliteLock(Outage):
    def __init__(self, path: Path) -> None:
        url = f"sqlite+aiosqlite:///{path}"
        super().__init__(f"{url}?timeout={SQLITE_LOCK_TIMEOUT}", url)
        self.path = path
        self.locker: asyncio.subprocess.Process | None = None

    async def cut(self) -> None:
        self.locker = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _LOCKER, str(self.path),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.locker.stdout is not None
        assert await asyncio.wait_for(self.locker.stdout.readline(), 30) == b"locked\n"

    async def restore(self) -> None:
        locker, self.locker = self.locker, None
        if locker is not None and locker.returncode is None:
            assert locker.stdin is not None
            locker.stdin.write(b"\n")
            await locker.stdin.drain()
            await asyncio.wait_for(locker.wait(), 30)


@asynccontextmanager
async def database_outage(kind: str, tmp_path: Path, pg_url: str) -> AsyncIterator[Outage]:
    """A fresh database of ``kind`` and the means to take it away; restored at the end."""
    if kind == "sqlite":
        outage: Outage = SqliteLock(tmp_path / "gateway.db")
        try:
            yield outage
        finally:
            await outage.restore()
        return
    async with fresh_database("postgresql", tmp_path, pg_url) as engine:
        direct = make_url(engine.url)
        proxy = await TcpProxy(direct.host or "127.0.0.1", direct.port or 5432).start()
        url = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        outage = ProxyCut(url, direct.render_as_string(hide_password=False), proxy)
        try:
            yield outage
        finally:
            await outage.restore()
            await proxy.close()
