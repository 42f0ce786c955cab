"""Long bodies on the web fast path go socket to socket in the kernel (``gateway.http.splice``):
whole, counted, cut like any other flight, and with every descriptor they used given back."""

from __future__ import annotations

import hashlib
import os

import aiohttp
import pytest

from tests.eventually import eventually
from tests.gateway.http.conftest import WebTargets
from tests.gateway.http.test_kill import opened
from tests.gateway.http.upstreams import CHUNK

SIZE = 8 * 1024 * 1024 + 13  # well past SPLICE_FROM, and not a whole number of chunks


def spliced(web: WebTargets) -> float:
    return float(web.node.metrics.http_spliced._value.get())


def _name(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class Pipes:
    """The splicers' pipes: each one made is seen (its inode's name); ``open`` says how many
    of them are still open (a number reused by something else is not the same pipe)."""

    def __init__(self) -> None:
        self.made: list[tuple[int, str]] = []

    @property
    def open(self) -> int:
        return sum(_name(fd) == name for fd, name in self.made)


@pytest.fixture
def pipes(monkeypatch: pytest.MonkeyPatch) -> Pipes:
    seen = Pipes()
    real = os.pipe2

    def pipe2(flags: int) -> tuple[int, int]:
        fds = real(flags)
        seen.made.extend((fd, _name(fd)) for fd in fds)
        return fds

    monkeypatch.setattr(os, "pipe2", pipe2)
    return seen


def expected(size: int) -> bytes:
    return (CHUNK * (size // len(CHUNK) + 1))[:size]


async def test_a_long_download_is_spliced_whole_and_the_connection_goes_on(
    web: WebTargets, pipes: Pipes
) -> None:
    browser = await opened(web)
    before = spliced(web)
    async with browser.get(web.base("echo") + f"big?size={SIZE}") as resp:
        assert resp.status == 200 and resp.headers["Content-Length"] == str(SIZE)
        body = await resp.read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(expected(SIZE)).digest()
    moved = spliced(web) - before
    assert SIZE // 2 < moved < SIZE  # the first read's bytes went the ordinary way
    async with browser.get(web.base("echo") + "after") as resp:
        assert resp.status == 200  # the same kept-alive connections, both sides
    (session,) = web.sessions("echo")
    assert session.bytes_down >= SIZE
    assert pipes.made and not pipes.open


async def test_a_spliced_body_the_target_breaks_off_cuts_the_browser(web: WebTargets) -> None:
    browser = await opened(web)
    before = spliced(web)
    with pytest.raises(aiohttp.ClientPayloadError):
        url = web.base("echo") + f"big?truncate=1&missing=1000&size={SIZE}"
        async with browser.get(url) as resp:
            assert resp.headers["Content-Length"] == str(SIZE + 1000)
            await resp.read()
    assert spliced(web) > before
    async with browser.get(web.base("echo") + "after") as resp:
        assert resp.status == 200


async def test_terminate_cuts_a_download_the_browser_is_slow_to_read(
    web: WebTargets, pipes: Pipes
) -> None:
    browser = await opened(web)
    (session,) = web.sessions("echo")
    resp = await browser.get(web.base("echo") + f"big?size={64 * 1024 * 1024}")
    await resp.content.readexactly(1024 * 1024)  # then it stops reading: the splice waits
    assert await web.node.registry.terminate(session.id, "terminated by ada: enough")
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    assert not session.fast
    assert pipes.made and not pipes.open


async def test_a_browser_that_leaves_mid_download_frees_the_splice(
    web: WebTargets, pipes: Pipes
) -> None:
    browser = await opened(web)
    resp = await browser.get(web.base("echo") + f"big?size={64 * 1024 * 1024}")
    await resp.content.readexactly(1024 * 1024)
    resp.close()  # the connection goes, mid-body
    (session,) = web.sessions("echo")
    await eventually(lambda: not session.fast, what="the flight ended")
    assert pipes.made and not pipes.open
    async with browser.get(web.base("echo") + "after") as again:
        assert again.status == 200
