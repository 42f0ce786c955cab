"""The one way tests wait for something to happen: poll a check until it holds.

The timeout is a bound against hangs, never a performance assertion: it is generous, and a
test that passes does so as soon as the check holds. A check that raises ends the wait with
its exception (a dead process is a failure, not something to wait out).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
async def eventually(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str,
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T | None], *, timeout: float = ..., interval: float = ..., what: str
) -> T: ...


async def eventually(
    check: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05, what: str
) -> Any:
    """Call ``check`` (sync or async) every ``interval`` seconds until it returns a truthy
    value, and return that value; after ``timeout`` seconds fail with an AssertionError
    naming ``what`` and the last value seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"not within {timeout}s: {what} (last value: {value!r})")
        await asyncio.sleep(interval)


def eventually_blocking(
    check: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.05, what: str
) -> T:
    """``eventually`` for code that has no event loop (sync tests and fixtures): the same
    polling on a private loop. Called inside a running loop it raises RuntimeError."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("eventually_blocking inside an event loop: await eventually()")
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(
            eventually(check, timeout=timeout, interval=interval, what=what)
        )
    finally:
        loop.close()
