"""Audit streaming into Debian's real rsyslogd (RFC 5424 over TCP) and a rotating JSON-lines
file: every event arrives with its structured fields and chain hash, and none is lost across
a receiver outage or a gateway restart."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.app import start_node
from gateway.audit import AuditLog
from gateway.cli.main import main
from gateway.services import open_services
from gateway.sessions.records import NewSession
from gateway.stream.settings import JsonlSink, SyslogSink
from policy.models import Rule
from policy.service import SYSTEM_ACTOR
from tests.clock import FakeTimer
from tests.eventually import eventually
from tests.gateway.stream.rsyslog_receiver import Rsyslog
from tests.nodes import start_test_node

RULE = Rule(
    name="dev",
    roles=frozenset({"dev"}),
    approvals=1,
    approver_roles=frozenset({"approver"}),
    require_reason=True,
)


def jsonl_seqs(path: Path) -> list[int]:
    seqs = []
    for file in sorted(path.parent.glob(path.name + "*")):
        seqs += [json.loads(line)["seq"] for line in file.read_text().splitlines()]
    return seqs


async def db_hashes(audit: AuditLog) -> dict[int, str]:
    import sqlalchemy as sa

    from gateway.db.tables import audit_events

    async with audit.maker() as db:
        rows = (await db.execute(sa.select(audit_events.c.seq, audit_events.c.hash))).all()
    return {int(r.seq): str(r.hash) for r in rows}


@pytest.fixture
def rsyslog(tmp_path: Path) -> Rsyslog:
    receiver = Rsyslog(tmp_path / "rsyslog")
    receiver.workdir.mkdir()
    receiver.start()
    yield receiver  # type: ignore[misc]
    receiver.stop()


async def test_every_event_reaches_rsyslog_and_the_file_through_an_outage_and_a_restart(
    db_url: str, tmp_path: Path, rsyslog: Rsyslog
) -> None:
    timer = FakeTimer(datetime.now(UTC))
    jsonl = tmp_path / "siem" / "audit.jsonl"
    sinks = (
        SyslogSink(name="siem", host="127.0.0.1", port=rsyslog.port),
        JsonlSink(name="file", path=jsonl, max_bytes=4096, keep=50),
    )
    node = await start_test_node(
        db_url, tmp_path, name="stream-node", rules=(RULE,), timer=timer, audit_sinks=sinks
    )
    audit = node.services.audit
    policy = node.services.policy
    try:
        await policy.add_user(SYSTEM_ACTOR, "alice", roles=["dev"])
        await policy.add_user(SYSTEM_ACTOR, "bob", roles=["approver"])
        await policy.add_target(SYSTEM_ACTOR, "db01", host="10.0.0.5", accounts=["root"])
        req = await policy.create_request(
            "alice", "db01", account="root", duration=timedelta(hours=1), reason="INC-1"
        )
        approved = await policy.approve("bob", req.id)
        assert approved.grant_id
        session = NewSession(
            "se-00aa11bb22cc33dd", "ssh", "alice", "db01", "root", approved.grant_id, "192.0.2.7"
        )
        await node.services.sessions.started(session)
        await node.services.sessions.ended(session.id, "alice", "client disconnected", 10, 20)

        async def all_arrived() -> bool:
            head = max(await db_hashes(audit))
            return set(rsyslog.seqs()) >= set(range(1, head + 1)) and set(jsonl_seqs(jsonl)) >= set(
                range(1, head + 1)
            )

        await eventually(all_arrived, what="every audit event in rsyslog and the file")
        hashes = await db_hashes(audit)
        received = {int(r.params["seq"]): r for r in rsyslog.received()}
        for seq, digest in hashes.items():
            assert received[seq].params["hash"] == digest
            assert received[seq].version == "1" and received[seq].app == "lockgate"
        grant = next(r for r in received.values() if r.msgid == "grant.create")
        assert grant.params["target"] == "db01"
        assert grant.params["grant"] == approved.grant_id
        assert grant.params["outcome"] == "success"
        assert json.loads(grant.msg)["details"]["account"] == "root"
        ended = next(r for r in received.values() if r.msgid == "session.end")
        assert ended.params["session"] == session.id
        assert ended.params["target"] == "db01"
        assert ended.params["grant"] == approved.grant_id
        assert ended.params["src"] == "192.0.2.7"
        assert ended.hostname == "stream-node"

        # The receiver goes away while events stream in; they keep coming while it is down;
        # it comes back: nothing is lost.
        before = len(hashes)

        async def burst(label: str, count: int) -> None:
            for i in range(count):
                await audit.record(actor="alice", action=f"test.{label}", subject=f"n{i}")
                await asyncio.sleep(0.01)

        streaming = asyncio.ensure_future(burst("around-outage", 40))
        await eventually(
            lambda: any(r.msgid == "test.around-outage" for r in rsyslog.received()),
            what="the burst reaching rsyslog",
        )
        await asyncio.to_thread(rsyslog.stop)
        await streaming
        await audit.record(actor="?", action="auth.failure", subject="mallory")
        await asyncio.to_thread(rsyslog.start)
        await eventually(all_arrived, what="the outage's events after rsyslog returned")
        failure = next(r for r in rsyslog.received() if r.msgid == "auth.failure")
        assert failure.params["outcome"] == "failure"
        assert max(await db_hashes(audit)) == before + 41

        # The gateway stops; the host's CLI writes events meanwhile; it starts again.
        config = node.config
        await node.stop("test restart")
        offline = await open_services(config, clock=timer.now)
        try:
            for i in range(5):
                await offline.audit.record(actor="lockgate", action="test.offline", subject=str(i))
        finally:
            await offline.aclose()
        node = await start_node(config, timer=timer)
        audit = node.services.audit
        await eventually(all_arrived, what="events written while the gateway was down")
        seqs = rsyslog.seqs()
        assert set(seqs) == set(await db_hashes(audit))  # no gap, nothing invented
        config_file = tmp_path / "lockgate.toml"
        config_file.write_text(
            f'[server]\ndata_dir = "{config.server.data_dir}"\n'
            f'[database]\nurl = "{config.database_url}"\n'
            '[[audit.sinks]]\nname = "siem"\nkind = "syslog"\n'
            f'address = "127.0.0.1:{rsyslog.port}"\n'
            f'[[audit.sinks]]\nname = "file"\nkind = "jsonl"\npath = "{jsonl}"\n'
        )

        async def caught_up() -> list[dict[str, object]] | None:
            out, err = io.StringIO(), io.StringIO()
            argv = ["audit", "streams", "--json", "--config", str(config_file)]
            assert await asyncio.to_thread(main, argv, out, err) == 0, err.getvalue()
            rows: list[dict[str, object]] = json.loads(out.getvalue())
            return rows if all(r["behind"] == 0 for r in rows) else None

        streams = await eventually(caught_up, what="lockgate audit streams: nothing behind")
        assert [(r["name"], r["kind"], r["node"]) for r in streams] == [
            ("siem", "syslog", "stream-node"),
            ("file", "jsonl", "stream-node"),
        ]
        assert len(list(jsonl.parent.glob("audit.jsonl.*"))) >= 1  # the file rotated
        assert sorted(set(jsonl_seqs(jsonl))) == sorted(await db_hashes(audit))
    finally:
        await node.stop("test finished")
