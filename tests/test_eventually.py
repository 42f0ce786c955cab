"""The polling helper every test waits with."""

from __future__ import annotations

import asyncio

import pytest

from tests.eventually import eventually, eventually_blocking


class Countdown:
    """Falsy values until the n-th call, then a value."""

    def __init__(self, n: int, value: object = "ready") -> None:
        self.calls = 0
        self.n = n
        self.value = value

    def __call__(self) -> object:
        self.calls += 1
        return self.value if self.calls >= self.n else 0


async def test_returns_the_first_truthy_value_of_a_sync_check() -> None:
    check = Countdown(3, value=["a"])
    assert await eventually(check, interval=0.001, what="three calls") == ["a"]
    assert check.calls == 3


async def test_returns_the_first_truthy_value_of_an_async_check() -> None:
    check = Countdown(3)

    async def async_check() -> object:
        await asyncio.sleep(0)
        return check()

    assert await eventually(async_check, interval=0.001, what="three calls") == "ready"
    assert check.calls == 3


async def test_a_check_that_holds_at_once_is_called_once() -> None:
    check = Countdown(1)
    assert await eventually(check, what="at once") == "ready"
    assert check.calls == 1


@pytest.mark.parametrize("falsy", [None, False, 0, "", []])
async def test_times_out_naming_what_and_the_last_value(falsy: object) -> None:
    with pytest.raises(AssertionError) as failure:
        await eventually(lambda: falsy, timeout=0.05, interval=0.01, what="the impossible")
    assert str(failure.value) == f"not within 0.05s: the impossible (last value: {falsy!r})"


async def test_times_out_on_an_async_check() -> None:
    async def never() -> None:
        return None

    with pytest.raises(AssertionError, match=r"^not within 0\.05s: never"):
        await eventually(never, timeout=0.05, interval=0.01, what="never")


async def test_an_exception_from_the_check_ends_the_wait() -> None:
    def broken() -> bool:
        raise RuntimeError("the process died")

    with pytest.raises(RuntimeError, match="the process died"):
        await eventually(broken, what="a dead process")


def test_blocking_variant_polls_without_an_event_loop() -> None:
    check = Countdown(2)
    assert eventually_blocking(check, interval=0.001, what="two calls") == "ready"
    assert check.calls == 2
    with pytest.raises(AssertionError, match=r"^not within 0\.05s: nothing \(last value: 0\)$"):
        eventually_blocking(lambda: 0, timeout=0.05, interval=0.01, what="nothing")


async def test_blocking_variant_refuses_to_run_inside_a_loop() -> None:
    with pytest.raises(RuntimeError, match="await eventually"):
        eventually_blocking(lambda: True, what="inside a loop")
