"""The database goes away (a real TCP proxy between node and PostgreSQL is cut) and comes
back: the LISTEN connection is re-opened, with a metric and a log line."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import Node
from gateway.cluster.bus import EventKind
from tests.conftest import PG_URL
from tests.dbproxy import TcpProxy
from tests.eventually import eventually
from tests.libdb import fresh_database
from tests.nodes import start_test_node

pytestmark = pytest.mark.skipif(not PG_URL, reason="PostgreSQL only (LISTEN/NOTIFY)")


@pytest.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[tuple[Node, TcpProxy, str]]:
    async with fresh_database("postgresql", tmp_path, PG_URL) as engine:
        direct = engine.url
        proxy = await TcpProxy(direct.host or "127.0.0.1", direct.port or 5432).start()
        url = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        node = await start_test_node(url, tmp_path, name="outage-node")
        try:
            yield node, proxy, direct.render_as_string(hide_password=False)
        finally:
            proxy.restore()
            await node.stop("test finished")
            await proxy.close()


async def test_the_listen_connection_is_reopened_after_an_outage(
    proxied: tuple[Node, TcpProxy, str], caplog: pytest.LogCaptureFixture
) -> None:
    node, proxy, _ = proxied
    bus = node.bus
    seen: list[str] = []

    async def handler(event: object) -> None:
        seen.append(getattr(event, "payload", {}).get("subject", ""))

    bus.subscribe(handler)
    caplog.set_level(logging.INFO)
    proxy.cut()
    await eventually(lambda: bus._listen_lost, what="the follower noticed the lost LISTEN")
    proxy.restore()
    await eventually(lambda: bus.listen_reconnects == 1, what="LISTEN re-opened")
    assert "LISTEN connection was lost" in caplog.text
    assert "LISTEN connection is open again" in caplog.text
    assert node.metrics.cluster_listen_reconnects._value.get() == 1  # type: ignore[attr-defined]
    await bus.send(EventKind.RECHECK, {"action": "test", "subject": "after-outage"})
    await eventually(lambda: "after-outage" in seen, what="an event after the outage")
    assert not bus._listen_lost and bus._listener is not None and not bus._listener.is_closed()
