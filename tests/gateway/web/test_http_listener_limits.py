"""The HTTP listener's limits on a real node: headers that trickle and idle connections are
cut, and one address cannot hold more than its share of unauthenticated connections."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import Node
from gateway.config import Limits
from policy.service import SYSTEM_ACTOR
from tests.nodes import start_test_node

GUARD = 20  # seconds: only a hang guard, never the figure under test


@contextlib.asynccontextmanager
async def _node(db_url: str, tmp_path: Path, **limits: int) -> AsyncIterator[Node]:
    node = await start_test_node(db_url, tmp_path, name="limits-node", limits=Limits(**limits))
    try:
        yield node
    finally:
        await node.stop("test finished")


@pytest.fixture
async def capped(db_url: str, tmp_path: Path) -> AsyncIterator[Node]:
    limits = Limits(http_header_timeout=300, http_idle_timeout=300, http_max_unauthenticated=3)
    node = await start_test_node(db_url, tmp_path, name="capped-node", limits=limits)
    try:
        yield node
    finally:
        await node.stop("test finished")


async def _open(
    node: Node, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", node.http_port, local_addr=(source, 0))


async def test_a_client_that_trickles_its_headers_is_cut(db_url: str, tmp_path: Path) -> None:
    async with _node(db_url, tmp_path, http_header_timeout=1, http_idle_timeout=300) as node:
        await _trickle(node)


async def _trickle(quick: Node) -> None:
    reader, writer = await _open(quick)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.1)

    feeding = asyncio.ensure_future(trickle())
    try:
        assert await asyncio.wait_for(reader.read(), GUARD) == b""
    finally:
        feeding.cancel()
        writer.close()


async def test_an_idle_keep_alive_connection_is_closed(db_url: str, tmp_path: Path) -> None:
    async with _node(db_url, tmp_path, http_header_timeout=300, http_idle_timeout=2) as node:
        await _idle(node)


async def _idle(quick: Node) -> None:
    reader, writer = await _open(quick)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (await asyncio.wait_for(reader.readline(), GUARD)).startswith(b"HTTP/1.1 200")
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
    # Nothing more is sent: the server closes the connection after its idle timeout.
    rest = await asyncio.wait_for(reader.read(), GUARD)
    assert b"HTTP/1.1" not in rest
    writer.close()


async def test_unauthenticated_connections_per_address_are_capped(capped: Node) -> None:
    held = [await _open(capped, "127.0.0.8") for _ in range(3)]
    reader, writer = await _open(capped, "127.0.0.8")
    assert await asyncio.wait_for(reader.read(), GUARD) == b""  # the fourth: closed at once
    writer.close()
    assert not any(r.at_eof() for r, _ in held)
    # Another address is not affected.
    other, other_w = await _open(capped, "127.0.0.9")
    other_w.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert (await asyncio.wait_for(other.read(), GUARD)).startswith(b"HTTP/1.1 200")
    other_w.close()
    # A signed-in request moves its connection out of the count: room for one more.
    policy = capped.services.policy
    await policy.add_user(SYSTEM_ACTOR, "ada", roles=["admin"])
    token, _ = await policy.create_token(SYSTEM_ACTOR, "ada")
    r0, w0 = held[0]
    w0.write(
        b"GET /api/v1/whoami HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer "
        + token.encode()
        + b"\r\n\r\n"
    )
    assert (await asyncio.wait_for(r0.readline(), GUARD)).startswith(b"HTTP/1.1 200")
    await asyncio.wait_for(r0.readuntil(b"\r\n\r\n"), GUARD)
    fourth, fourth_w = await _open(capped, "127.0.0.8")
    fourth_w.write(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert (await asyncio.wait_for(fourth.read(), GUARD)).startswith(b"HTTP/1.1 200")
    for _, w in [*held, (fourth, fourth_w)]:
        w.close()
