"""The database goes away and comes back: on PostgreSQL a real TCP proxy between node and
server is cut, on SQLite another process holds the write lock (``tests.outage``). The LISTEN
connection is re-opened, with a metric and a log line; a session that ends meanwhile is
recorded and its recording sealed once the database returns, even across a stop and start
of the node; a kill is a 503; a new session is refused with a one-line reason."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.app import Node, start_node
from gateway.cluster.bus import EventKind
from policy.models import Rule
from policy.service import SYSTEM_ACTOR
from recorder.store import RecordingStore
from tests.conftest import DB_KINDS, PG_URL
from tests.dbproxy import TcpProxy
from tests.eventually import eventually
from tests.libdb import fresh_database
from tests.nodes import start_test_node
from tests.outage import Outage, database_outage
from tests.target import TARGET_USER, Sshd, register_target, ssh_argv


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


@pytest.mark.skipif(not PG_URL, reason="PostgreSQL only (LISTEN/NOTIFY)")
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


@pytest.fixture(params=DB_KINDS)
async def outage(
    request: pytest.FixtureRequest, tmp_path: Path, sshd: Sshd
) -> AsyncIterator[tuple[Node, Outage, Path]]:
    async with database_outage(request.param, tmp_path, PG_URL) as cut:
        node = await start_test_node(
            cut.url, tmp_path, name="outage-ssh", rules=RULES, recordings_path=tmp_path / "rec"
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
        nodes = [node]
        node.test_nodes = nodes  # type: ignore[attr-defined]  # a restarted node joins
        try:
            yield node, cut, key
        finally:
            await cut.restore()
            for each in nodes:
                await each.stop("test finished")


async def _live_session(node: Node, key: Path) -> tuple[asyncio.subprocess.Process, str]:
    live = await asyncio.create_subprocess_exec(
        *ssh_argv(node.ssh_port, key, f"alice+{TARGET_USER}@db01"), "echo started; sleep 60",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert live.stdout is not None
    assert (await asyncio.wait_for(live.stdout.readline(), 30)) == b"started\n"
    return live, next(iter(node.registry.sessions))


async def _recorded_once(node: Node, session_id: str) -> None:
    """Ended as the client left, one ``session.end`` event with the moment, a sealed and
    intact recording, an intact audit chain."""
    record = await node.services.sessions.get(SYSTEM_ACTOR, session_id)
    assert not record.active and record.end_reason == "client disconnected"
    ends = [
        e for e in await node.services.audit.events()
        if e.action == "session.end" and e.subject == session_id
    ]  # fmt: skip
    assert len(ends) == 1 and "ended_at" in ends[0].details
    assert ends[0].details["reason"] == "client disconnected"
    store = RecordingStore(node.config.recordings_path, node.services.maker)
    try:
        info = await store.get(session_id)
        assert info.sealed
        assert await store.verify(session_id) == [(session_id, None)]
    finally:
        await store.aclose()
    assert (await node.services.audit.verify()).ok


async def test_a_session_that_ends_during_an_outage_is_recorded_when_the_database_returns(
    outage: tuple[Node, Outage, Path],
) -> None:
    node, cut, key = outage
    live, session_id = await _live_session(node, key)
    await cut.cut()
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
    if node.config.database_url.startswith("postgresql"):
        # A browser sign-in says so too (SQLite still reads while another process writes).
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
        a if a != "LogLevel=ERROR" else "LogLevel=INFO"
        for a in ssh_argv(node.ssh_port, key, f"alice+{TARGET_USER}@db01")
    ]
    refused = await asyncio.create_subprocess_exec(
        *argv, "true",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(refused.communicate(), 60)
    assert refused.returncode != 0 and b"lockgate: " in err, err
    if node.config.database_url.startswith("postgresql"):
        assert b"lockgate: the gateway cannot reach its database" in err
    # The live session ends while the database is away: its end is owed, its file sealed.
    live.kill()
    await live.wait()
    await eventually(lambda: session_id not in node.registry.sessions, what="the session ended")
    assert node.owed is not None and node.owed.count >= 2  # the end and the seal
    await cut.restore()
    await eventually(lambda: node.owed.count == 0, what="owed writes replayed")  # type: ignore[union-attr]
    await _recorded_once(node, session_id)


async def test_what_an_outage_left_owed_survives_a_stop_and_is_written_first_at_start(
    outage: tuple[Node, Outage, Path],
) -> None:
    """The node stops while the database is still away, with the session's end owed; it
    starts again once the database is back. The end is written with its true reason and
    moment before the start-up sweep of sessions left live (which would otherwise record it
    as cut by a restart)."""
    node, cut, key = outage
    live, session_id = await _live_session(node, key)
    await cut.cut()
    handle = node.registry.sessions[session_id]
    live.kill()
    await live.wait()
    # The stop comes while the end is under way: it waits for it (owed, not lost).
    await eventually(lambda: handle._ended, what="the session's end begun")  # type: ignore[attr-defined]
    await node.stop("stopped during the outage")
    assert node.owed is not None and node.owed.count >= 2  # the end and the seal
    node.test_nodes.clear()  # type: ignore[attr-defined]
    await cut.restore()
    again = await start_node(node.config)
    node.test_nodes.append(again)  # type: ignore[attr-defined]
    assert again.owed is not None and again.owed.count == 0
    await _recorded_once(again, session_id)


async def test_refusals_and_the_stop_during_an_outage_are_audited_once_it_is_over(
    outage: tuple[Node, Outage, Path],
) -> None:
    """What is audited after the fact (a refused login, the node's stop) is owed while the
    database is away and written once, with the moment it happened, when the node next
    starts; a replay of the same owed event writes nothing more."""
    node, cut, key = outage
    await cut.cut()
    refused = await asyncio.create_subprocess_exec(
        *ssh_argv(node.ssh_port, key, f"alice+{TARGET_USER}@nosuch"), "true",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await asyncio.wait_for(refused.communicate(), 60)
    assert refused.returncode != 0
    await node.stop("stopped during the outage")
    assert node.owed is not None
    owed = [line for line in node.owed.path.read_text().splitlines() if "audit.event" in line]
    assert len(owed) == 2, owed  # the refusal and the stop
    node.test_nodes.clear()  # type: ignore[attr-defined]
    await cut.restore()
    again = await start_node(node.config)
    node.test_nodes.append(again)  # type: ignore[attr-defined]
    assert again.owed is not None and again.owed.count == 0
    events = await again.services.audit.events()
    late = [e for e in events if "happened_at" in e.details]
    # The login cannot be checked on either (SQLite: its throttle cannot be written).
    assert sorted(e.action for e in late) == ["auth.refused", "node.stop"], late
    refusal = next(e for e in late if e.action == "auth.refused")
    assert refusal.actor == "alice" and refusal.details["client"].startswith("127.0.0.1")
    assert refusal.details["code"] == "database_unavailable"
    # Replaying the same journal line again (a crash before the journal was rewritten)
    # writes nothing twice.
    await again.services.audit.write_owed(json.loads(owed[0])["payload"])
    assert len(await again.services.audit.events()) == len(events)
    assert (await again.services.audit.verify()).ok
