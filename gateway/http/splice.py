"""A known-length body moved between two plain TCP sockets by the kernel (``splice(2)``).

A large download on the fast path otherwise crosses the gateway's memory twice per read (a
``recv`` into a new bytes object, then a ``send`` from it); spliced through a pipe, the
pages go from one socket to the other without the interpreter touching them. Only where
neither side speaks TLS in user space (the bytes must pass unchanged) and only on Linux.

The sockets stay their transports'; the splicer works on duplicates of their descriptors,
registered with the event loop under their own numbers, while the transports are quiet:
the upstream's reading is paused by the caller and the browser's transport has nothing
buffered (``drained`` is awaited first). Closing the splicer never closes either connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Callable

_CHUNK = 1 << 20
_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)


class SourceEnded(Exception):
    """The sending side closed or reset before the whole body came."""


class DestinationGone(Exception):
    """The receiving side went away."""


def plain_socket(transport: asyncio.BaseTransport | None) -> int | None:
    """The descriptor of a transport's socket when its bytes are the wire's (no TLS in user
    space), else None."""
    if transport is None or not hasattr(os, "splice") or transport.is_closing():
        return None
    if transport.get_extra_info("ssl_object") is not None:
        return None
    sock = transport.get_extra_info("socket")
    return None if sock is None else int(sock.fileno())


class Splicer:
    """Moves ``length`` bytes from ``source`` to ``destination`` (descriptors of connected,
    non-blocking sockets), reporting each step to ``progress``."""

    def __init__(self, source: int, destination: int) -> None:
        self._fds: list[int] = []
        self._loop = asyncio.get_running_loop()
        try:
            self._src = self._keep(os.dup(source))
            self._dst = self._keep(os.dup(destination))
            self._r, self._w = (self._keep(fd) for fd in os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC))
        except OSError:
            self.close()
            raise
        with contextlib.suppress(OSError):  # a smaller pipe only means more steps
            fcntl.fcntl(self._w, fcntl.F_SETPIPE_SZ, _CHUNK)
        self._waiting: asyncio.Future[None] | None = None

    def _keep(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    async def run(
        self, length: int, drained: Callable[[], bool], progress: Callable[[int], None]
    ) -> None:
        """Raises SourceEnded or DestinationGone; returns once all ``length`` bytes left."""
        while not drained():  # what the browser's transport still holds goes first
            await self._wait(write=True)
        left, in_pipe = length, 0
        while left or in_pipe:
            moved = False
            if left and in_pipe < _CHUNK:
                try:
                    n = os.splice(self._src, self._w, min(left, _CHUNK - in_pipe), flags=_FLAGS)
                except BlockingIOError:
                    pass
                except OSError as exc:
                    raise SourceEnded from exc
                else:
                    if n == 0:
                        raise SourceEnded
                    left, in_pipe, moved = left - n, in_pipe + n, True
            if in_pipe:
                try:
                    n = os.splice(self._r, self._dst, in_pipe, flags=_FLAGS)
                except BlockingIOError:
                    pass
                except OSError as exc:
                    raise DestinationGone from exc
                else:
                    in_pipe -= n
                    moved = True
                    progress(n)
            if not moved:
                await self._wait(read=bool(left) and in_pipe < _CHUNK, write=bool(in_pipe))

    async def _wait(self, *, read: bool = False, write: bool = False) -> None:
        waiting = self._loop.create_future()
        self._waiting = waiting

        def ready() -> None:
            if not waiting.done():
                waiting.set_result(None)

        if read:
            self._loop.add_reader(self._src, ready)
        if write:
            self._loop.add_writer(self._dst, ready)
        try:
            await waiting
        finally:
            self._waiting = None
            if self._fds:  # once closed, these numbers may already be someone else's
                if read:
                    self._loop.remove_reader(self._src)
                if write:
                    self._loop.remove_writer(self._dst)

    def close(self) -> None:
        """Idempotent; the event loop forgets the duplicates before they close."""
        if self._waiting is not None and not self._waiting.done():
            self._waiting.cancel()
        fds, self._fds = self._fds, []
        for fd in fds:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
            os.close(fd)
