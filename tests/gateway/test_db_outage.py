"""The database goes away (a real TCP proxy between node and PostgreSQL is cut) and comes
back: the LISTEN connection is re-opened, with a metric and a log line; a session that ends
meanwhile is recorded and its recording sealed once the database returns; a kill is a 503;
a new session is refused with a one-line reason."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.app import Node
from gateway.cluster.bus import EventKind
from policy.models import Rule
from policy.service import SYSTEM_ACTOR
from recorder.store import RecordingStore
from tests.conftest import PG_URL
from tests.dbproxy import TcpProxy
from tests.eventually import eventually
from tests.libdb import fresh_database
from tests.nodes import start_test_node
from tests.target import TARGET_USER, Sshd, register_target, ssh_argv

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


RULES = (Rule(name="auto", roles=frozenset({"dev"}), approvals=0, require_reason=False),)


@pytest.fixture
async def outage(tmp_path: Path, sshd: Sshd) -> AsyncIterator[tuple[Node, TcpProxy, Path]]:
    async with fresh_database("postgresql", tmp_path, PG_URL) as engine:
        direct = engine.url
        proxy = await TcpProxy(direct.host or "127.0.0.1", direct.port or 5432).start()
        url = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        node = await start_test_node(
            url, tmp_path, name="outage-ssh", rules=RULES, recordings_path=tmp_path / "rec"
        )
        key = tmp_path / "id_alice"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        await node.services.policy.add_user(
            SYSTEM_ACTOR,
            "alice",
            roles=["dev"],
            public_keys=[(tmp_path / "id_alice.pub").read_text()],
        )
        await node.services.policy.add_user(SYSTEM_ACTOR, "ada", roles=["admin"])
        admin_token, _ = await node.services.policy.create_token(SYSTEM_ACTOR, "ada")
        node.test_token = admin_token  # type: ignore[attr-defined]
        await register_target(node.services, sshd)
        try:
            yield node, proxy, key
        finally:
            proxy.restore()
            await node.stop("test finished")
            await proxy.close()


async def test_a_session_that_ends_during_an_outage_is_recorded_when_the_database_returns(
    outage: tuple[Node, TcpProxy, Path],
) -> None:
    node, proxy, key = outage
    login = f"alice+{TARGET_USER}@db01"
    live = await asyncio.create_subprocess_exec(
        *ssh_argv(node.ssh_port, key, login), "echo started; sleep 60",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert live.stdout is not None
    assert (await asyncio.wait_for(live.stdout.readline(), 30)) == b"started\n"
    session_id = next(iter(node.registry.sessions))
    proxy.cut()
    # A kill asked for now cannot be carried out: a clear 503, not a 500.
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{node.http_port}/api/v1/sessions/{session_id}/terminate",
            json={"reason": "during outage"},
            headers={"Authorization": f"Bearer {node.test_token}"},  # type: ignore[attr-defined]
        ) as response,
    ):
        assert response.status == 503
        assert (await response.json())["type"] == "urn:lockgate:problem:unavailable"
    # A browser sign-in says so too.
    base = f"http://127.0.0.1:{node.http_port}"
    form = {"user": "alice", "password": "whatever-password", "code": "000000", "next": "/"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(base + "/login", data=form, headers={"Origin": base}) as response,
    ):
        assert response.status == 503
        assert "cannot reach its database" in await response.text()
    # A new session gets the one-line reason (OpenSSH shows it at its default log level).
    argv = [
        a if a != "LogLevel=ERROR" else "LogLevel=INFO" for a in ssh_argv(node.ssh_port, key, login)
    ]
    refused = await asyncio.create_subprocess_exec(
        *argv, "true",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(refused.communicate(), 60)
    assert refused.returncode != 0 and b"lockgate: the gateway cannot reach its database" in err
    # The live session ends while the database is away: its end is owed, its file sealed.
    live.kill()
    await live.wait()
    await eventually(lambda: not node.registry.sessions, what="the session ended")
    assert node.owed is not None and node.owed.count >= 2  # the end and the seal
    proxy.restore()
    await eventually(lambda: node.owed.count == 0, what="owed writes replayed")  # type: ignore[union-attr]
    record = await node.services.sessions.get(SYSTEM_ACTOR, session_id)
    assert not record.active and record.end_reason == "client disconnected"
    ends = [
        e for e in await node.services.audit.events()
        if e.action == "session.end" and e.subject == session_id
    ]  # fmt: skip
    assert len(ends) == 1 and "ended_at" in ends[0].details
    store = RecordingStore(node.config.recordings_path, node.services.maker)
    try:
        info = await store.get(session_id)
        assert info.sealed
        assert await store.verify(session_id) == [(session_id, None)]
    finally:
        await store.aclose()
    assert (await node.services.audit.verify()).ok
