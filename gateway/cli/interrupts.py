"""Ctrl-C and a closed pipe, as a person expects them of a command: a quiet exit.

Ctrl-C ends ``lockgate`` at once with status 130 and no traceback, wherever it is (importing,
at a prompt, inside a database call, replaying in a worker thread); a terminal left without
echo by a password prompt gets its settings back first. Commands that wait for something
(``request --wait``) take Ctrl-C over while they wait (``interruptible``). Standard library
only: it is installed before anything heavy is imported.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncio

INTERRUPTED = 130
BROKEN_PIPE = 128 + signal.SIGPIPE  # what a program killed by SIGPIPE reports

T = TypeVar("T")
_saved_tty: list[Any] = []


def _restore_terminal() -> None:
    if _saved_tty:
        import termios

        with contextlib.suppress(Exception):
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, _saved_tty[0])


def _quit(signum: int, frame: FrameType | None) -> None:
    _restore_terminal()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    os._exit(INTERRUPTED)


_wakeup: list[int] = []  # the write end the signal machinery writes signal numbers to


def _watch() -> None:
    """A thread that exits on SIGINT even while the main thread cannot run Python: the
    kernel may hand the signal to another thread (a worker replaying a recording, a database
    thread), and then nothing wakes the main thread until its wait ends on its own."""
    import threading

    read, write = os.pipe()
    os.set_blocking(write, False)
    signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    _wakeup[:] = [write]

    def watch() -> None:
        while data := os.read(read, 64):
            if signal.SIGINT in data:
                _restore_terminal()
                os._exit(INTERRUPTED)

    threading.Thread(target=watch, name="lockgate-ctrl-c", daemon=True).start()


def install() -> None:
    """Ctrl-C exits quietly with 130 (the console program calls this first)."""
    with contextlib.suppress(Exception):
        if sys.stdin.isatty():
            import termios

            _saved_tty[:] = [termios.tcgetattr(sys.stdin.fileno())]
    signal.signal(signal.SIGINT, _quit)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # as a shell starts programs
    _watch()


def pipe_closed() -> int:
    """Standard output's reader went away (``lockgate ... | head``): nothing more is written,
    not even at exit, and the status is that of a program stopped by SIGPIPE."""
    with contextlib.suppress(Exception):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return BROKEN_PIPE


class Interrupted(Exception):
    """Ctrl-C during an ``interruptible`` wait."""


@contextlib.contextmanager
def _handled_by_loop(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> Iterator[None]:
    previous = signal.getsignal(signal.SIGINT)
    loop.add_signal_handler(signal.SIGINT, task.cancel)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        signal.signal(signal.SIGINT, previous)
        if _wakeup:  # asyncio took the wakeup descriptor over while it handled the signal
            signal.set_wakeup_fd(_wakeup[0], warn_on_full_buffer=False)


async def interruptible(wait: Awaitable[T]) -> T:
    """Await ``wait``; Ctrl-C meanwhile cancels it and raises Interrupted (the caller says
    what was left as it was)."""
    import asyncio

    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(wait)
    with _handled_by_loop(loop, task):
        try:
            return await task
        except asyncio.CancelledError:
            if task.cancelled() and not _current_cancelling():
                raise Interrupted() from None
            raise


def _current_cancelling() -> bool:
    import asyncio

    current = asyncio.current_task()
    return bool(current is not None and current.cancelling())
