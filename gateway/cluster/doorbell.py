"""A doorbell between processes that share one SQLite database on one host.

SQLite has no ``NOTIFY``, so the cluster follower polls. To cut the wait, each follower binds a
Unix datagram socket in a private directory beside the database file, and whoever commits a
cluster event rings every socket there. A ring carries nothing: it only makes the follower
poll now, so a lost or a spurious ring changes latency and nothing else. The directory is
0700, so only the gateway's own user can ring.

Socket paths are reached through ``/proc/self/fd/<directory>/<name>`` so that a deep data
directory never hits the 108-byte limit of a Unix socket address. Where that is not
available (not Linux), ``listen`` fails and the follower keeps polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import URL

SUFFIX = ".sock"


def directory_for(url: URL) -> Path | None:
    """The doorbell directory of a file-backed SQLite database, else None."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    db = Path(url.database).resolve()
    return db.parent / f".{db.name}.doorbell"


def _via(dir_fd: int, name: str) -> str:
    return f"/proc/self/fd/{dir_fd}/{name}"


def ring(directory: Path) -> None:
    """Wake every follower listening in ``directory``; never raises, never blocks."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # nobody has listened here yet
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            for name in os.listdir(dir_fd):
                if not name.endswith(SUFFIX):
                    continue
                try:
                    sock.sendto(b"", _via(dir_fd, name))
                except ConnectionRefusedError:
                    # Nobody is bound there any more (a follower that died without cleaning up).
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=dir_fd)
                except OSError:
                    pass  # a full queue already means a poll is due
    except OSError:
        pass
    finally:
        os.close(dir_fd)


class Doorbell:
    """One follower's socket in the doorbell directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.name = f"{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        self._dir_fd: int | None = None
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def listen(self, on_ring: Callable[[], None]) -> None:
        """Bind and call ``on_ring`` on the event loop whenever someone rings; raises OSError."""
        self.directory.mkdir(mode=0o700, exist_ok=True)
        self.directory.chmod(0o700)
        self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(_via(self._dir_fd, self.name))
        except OSError:
            sock.close()
            self.close()
            raise
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._drain, on_ring)

    def _drain(self, on_ring: Callable[[], None]) -> None:
        assert self._sock is not None
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                self._sock.recv(16)
        on_ring()

    def close(self) -> None:
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._dir_fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.name, dir_fd=self._dir_fd)
            os.close(self._dir_fd)
            self._dir_fd = None
