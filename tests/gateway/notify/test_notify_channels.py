"""Notifications reach real receivers: a signed webhook (aiohttp, checking the HMAC), a
Slack-style incoming webhook, and aiosmtpd over STARTTLS with a login from the vault. A
receiver that fails for a while gets every notification once it recovers; one that never
recovers leaves dead letters, listed and retried from the CLI and the API. Retry timing
runs on the fake clock."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app import Node
from gateway.cli.main import main
from gateway.config import load_config
from gateway.notify.outbox import Outbox
from gateway.sessions.records import NewSession
from policy.models import Rule
from policy.service import SYSTEM_ACTOR
from tests.clock import FakeTimer
from tests.eventually import eventually
from tests.gateway.http.certs import ca_signed
from tests.gateway.notify.receivers import Hooks, Mailbox, tls_context
from tests.nodes import start_test_node

RULES = (
    Rule(
        name="two",
        roles=frozenset({"dev"}),
        approvals=2,
        approver_roles=frozenset({"approver"}),
        require_reason=True,
    ),
    Rule(
        name="glass",
        roles=frozenset({"oncall"}),
        approvals=1,
        approver_roles=frozenset({"approver"}),
        break_glass=True,
    ),
)
SMTP_PASSWORD = "smtp-pass-7f3a9c"
DEAD_SECRET = "dead-channel-secret-0123"


@dataclass
class Setup:
    node: Node
    timer: FakeTimer
    hooks: Hooks
    mailbox: Mailbox
    config_file: Path
    env: dict[str, str]


async def lockgate(setup: Setup, *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    """The real command line on the gateway host: in this process (a worker thread) unless
    it reads standard input, which only a child process can be given."""
    argv = (*argv, "--config", str(setup.config_file))
    if stdin is None:
        out, err = io.StringIO(), io.StringIO()
        status = await asyncio.to_thread(main, list(argv), out, err)
        return status, out.getvalue(), err.getvalue()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=setup.env,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 120)
    return proc.returncode or 0, out.decode(), err.decode()


def config_text(data: Path, db_url: str, hooks: Hooks, mailbox: Mailbox, ca: Path) -> str:
    return f"""
[server]
data_dir = "{data}"
public_url = "https://gw.example.com"
[database]
url = "{db_url}"
[[notifications]]
name = "hook"
kind = "webhook"
url = "{hooks.url("/hook")}"
[[notifications]]
name = "chat"
kind = "slack"
events = ["request.*", "grant.*", "session.killed", "breakglass.used"]
[[notifications]]
name = "mail"
kind = "email"
smtp = "127.0.0.1:{mailbox.port}"
tls_ca = "{ca}"
username = "lockgate"
sender = "lockgate@example.com"
to = ["security@example.com"]
to_approvers = true
user_address = "{{user}}@example.com"
events = ["request.created", "breakglass.used"]
[[notifications]]
name = "dead"
kind = "webhook"
url = "{hooks.url("/broken")}"
events = ["request.created"]
max_attempts = 2
"""


@pytest.fixture
async def setup(db_url: str, tmp_path: Path) -> AsyncIterator[Setup]:
    cert = ca_signed()
    ca = tmp_path / "smtp-ca.pem"
    ca.write_bytes(cert.ca_pem)
    hooks = Hooks(fail_first=2)
    await hooks.start()
    mailbox = Mailbox(tls_context(cert, tmp_path), (b"lockgate", SMTP_PASSWORD.encode()))
    mailbox.start()
    config_file = tmp_path / "lockgate.toml"
    config_file.write_text(config_text(tmp_path / "data", db_url, hooks, mailbox, ca))
    config = load_config(config_file, environ={})
    timer = FakeTimer(datetime.now(UTC))
    node = await start_test_node(
        db_url,
        tmp_path,
        name="notify-node",
        rules=RULES,
        timer=timer,
        environ={"LOCKGATE_SERVER_PUBLIC_URL": "https://gw.example.com"},
        notifications=config.notifications,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    try:
        yield Setup(node, timer, hooks, mailbox, config_file, env)
    finally:
        await node.stop("test finished")
        mailbox.stop()
        await hooks.stop()


async def outbox_rows(setup: Setup, channel: str) -> list[Any]:
    return await Outbox(setup.node.services.maker).list(channel=channel)


async def advance_until(setup: Setup, check: Any, what: str) -> Any:
    """Move the fake clock 30 s at a time (retry backoff) until ``check`` holds."""

    async def step() -> Any:
        result = await check()
        if not result:
            await setup.timer.advance(timedelta(seconds=30))
            await asyncio.sleep(0.3)  # a sender pass at the new time
        return result

    return await eventually(step, what=what)


def fields(message: dict[str, Any]) -> dict[str, str]:
    return {f["title"]: f["value"] for f in message["body"]["attachments"][0]["fields"]}


async def test_approvers_hear_of_a_request_at_once_and_follow_each_approval(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("lockgate", "gateway", "aiohttp", "sqlalchemy"):
        caplog.set_level(logging.DEBUG, logger=name)
    hooks, mailbox, policy = setup.hooks, setup.mailbox, setup.node.services.policy
    status, secret, err = await lockgate(setup, "notifications", "secret", "hook", "--generate")
    assert status == 0, err
    hooks.secret = secret.strip().encode()
    for name, value in (("dead", DEAD_SECRET), ("mail", SMTP_PASSWORD)):
        status, _, err = await lockgate(
            setup, "notifications", "secret", name, "--value-stdin", stdin=value + "\n"
        )
        assert status == 0, err
    status, _, err = await lockgate(setup, "notifications", "secret", "chat", "--generate")
    assert status == 2 and "--generate is for webhook secrets" in err
    status, _, err = await lockgate(  # the chat hook's URL is its credential: in the vault
        setup, "notifications", "secret", "chat", "--value-stdin", stdin=hooks.url("/slack")
    )
    assert status == 0, err

    for name, roles in (
        ("alice", ["dev"]),
        ("bob", ["approver"]),
        ("carol", ["approver"]),
        ("olga", ["oncall"]),
        ("ada", ["admin"]),
    ):
        await policy.add_user(SYSTEM_ACTOR, name, roles=roles)
    await policy.add_target(SYSTEM_ACTOR, "db01", host="10.0.0.5", accounts=["root"])
    request = await policy.create_request(
        "alice",
        "db01",
        account="root",
        duration=timedelta(hours=1),
        reason="disk full @channel <!here>",
        ticket="INC-7",
    )

    # The chat message and the mail arrive at once (no clock moved).
    first = await eventually(lambda: hooks.slack[:1], what="the chat message")
    assert "alice requests access to root@db01 (0 of 2 approvals)" in first[0]["body"]["text"]
    facts = fields(first[0])
    assert facts["Target"] == "db01" and facts["Account"] == "root"
    assert facts["Ticket"] == "INC-7" and facts["Duration"] == "1h"
    assert facts["Rule"] == "two" and facts["Approvals"] == "0 of 2"
    assert "@channel" not in facts["Reason"] and "<!here>" not in facts["Reason"]
    assert "&lt;!here&gt;" in facts["Reason"]
    link = first[0]["body"]["attachments"][0]["title_link"]
    assert link == f"https://gw.example.com/approvals?request={request.id}"
    assert first[0]["headers"]["X-Lockgate-Thread"] == request.id

    mails = await eventually(lambda: mailbox.messages[:1], what="the mail to approvers")
    recipients, mail = mails[0]
    assert sorted(recipients) == ["bob@example.com", "carol@example.com", "security@example.com"]
    assert "alice requests access to root@db01" in mail["Subject"]
    assert link in mail.get_payload(decode=True).decode()
    assert mailbox.logins == [b"lockgate"]  # after STARTTLS, with the vault's password

    # The webhook answers 503 twice: the notification waits for its retry.
    hook_rows = await eventually(lambda: _attempted(setup, "hook"), what="a failed webhook attempt")
    assert hook_rows[0].last_error == "the receiver answered HTTP 503"
    assert hook_rows[0].state == "pending"

    await policy.approve("bob", request.id, "ok from bob")
    second = await eventually(lambda: hooks.slack[1:2], what="the follow-up after bob")
    assert (
        "bob approved alice's request for root@db01 (1 of 2 approvals)"
        in (second[0]["body"]["text"])
    )
    await policy.approve("carol", request.id)
    third = await eventually(lambda: hooks.slack[2:3], what="the follow-up after carol")
    assert "carol approved: alice has root@db01 (2 of 2 approvals)" in third[0]["body"]["text"]
    granted = await policy.get_request(SYSTEM_ACTOR, request.id)
    grant = await policy.get_grant(SYSTEM_ACTOR, str(granted.grant_id))
    assert fields(third[0])["Until"] == grant.expires_at.isoformat(timespec="seconds")
    assert {m["headers"]["X-Lockgate-Thread"] for m in hooks.slack} == {request.id}

    # The webhook recovers: each notification once, signed, versioned, its own key.
    async def all_delivered() -> bool:
        return len(hooks.webhook) >= 3

    await advance_until(setup, all_delivered, "the webhook's retries")
    assert hooks.bad_signatures == 0 and hooks.webhook_refused == 2
    bodies = [d["body"] for d in hooks.webhook]
    assert [b["event"] for b in bodies] == [
        "request.created",
        "request.approved",
        "request.approved",
    ]
    assert all(b["version"] == 1 for b in bodies)
    assert [b["request"]["approvals"] for b in bodies] == [0, 1, 2]
    keys = [d["headers"]["Idempotency-Key"] for d in hooks.webhook]
    assert len(set(keys)) == 3 and keys == [b["id"] for b in bodies]

    # The broken receiver: two attempts, then a dead letter, in the API and the CLI.
    async def dead() -> list[Any]:
        return [r for r in await outbox_rows(setup, "dead") if r.state == "dead"]

    letters = await advance_until(setup, dead, "the dead letter")
    assert hooks.broken_calls == 2 and letters[0].last_error == "the receiver answered HTTP 500"
    token, _ = await policy.create_token(SYSTEM_ACTOR, "ada")
    base = f"http://127.0.0.1:{setup.node.http_port}/api/v1"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.get(f"{base}/notifications?state=dead") as response:
            listed = (await response.json())["items"]
        assert [(r["id"], r["channel"], r["event"]) for r in listed] == [
            (letters[0].id, "dead", "request.created")
        ]
        async with http.get(f"{base}/notifications?state=lost") as response:
            assert response.status == 422
    status, out, err = await lockgate(setup, "notifications", "list", "--state", "dead", "--json")
    assert status == 0, err
    assert [r["id"] for r in json.loads(out)] == [letters[0].id]
    status, out, err = await lockgate(setup, "notifications", "retry", str(letters[0].id))
    assert status == 0, err
    await eventually(lambda: hooks.broken_calls == 3, what="the retried dead letter")
    status, _, err = await lockgate(setup, "notifications", "retry", "999999")
    assert status == 1 and "no dead letter 999999" in err

    # Revocation, break-glass, a killed session, a grant about to end.
    await policy.revoke("ada", grant.id, "done with it")
    await eventually(
        lambda: any("ada revoked alice's access" in m["body"]["text"] for m in hooks.slack),
        what="the revocation message",
    )
    glass = await policy.create_request(
        "olga", "db01", account="root", duration=timedelta(minutes=30), reason="outage"
    )
    assert glass.grant_id
    await eventually(
        lambda: any("BREAK-GLASS: olga took root@db01" in m["body"]["text"] for m in hooks.slack),
        what="the break-glass message",
    )
    glass_mail = await eventually(
        lambda: [to for to, m in mailbox.messages if "BREAK-GLASS" in m["Subject"]],
        what="the break-glass mail",
    )
    assert sorted(glass_mail[0]) == [  # the glass rule's approvers hear of it too
        "bob@example.com",
        "carol@example.com",
        "security@example.com",
    ]
    session = NewSession(
        "se-0011223344556677", "ssh", "olga", "db01", "root", glass.grant_id, "::1"
    )
    sessions = setup.node.services.sessions
    await sessions.started(session)
    await sessions.ended(session.id, "olga", "terminated by ada: looked wrong", 0, 0)
    killed = await eventually(
        lambda: [m for m in hooks.slack if "session on root@db01 was ended" in m["body"]["text"]],
        what="the session-killed message",
    )
    assert fields(killed[0])["Session end"] == "terminated by ada: looked wrong"
    await setup.timer.advance(timedelta(minutes=25))  # olga's 30 min grant: 5 min (or less) left
    assert setup.node.notifier is not None
    await setup.node.notifier.dispatcher.scan_expiring()
    await setup.node.notifier.dispatcher.scan_expiring()  # the same notice is enqueued once
    await eventually(
        lambda: any("olga's access to root@db01 ends in" in m["body"]["text"] for m in hooks.slack),
        what="the grant-expiring message",
    )
    queued = [r for r in await outbox_rows(setup, "chat") if r.event == "grant.expiring"]
    assert len(queued) == 1

    # No secret in a log line, an outbox row or the API's listing.
    everything = caplog.text + json.dumps(listed) + out
    for row in await Outbox(setup.node.services.maker).list():
        everything += json.dumps(row.payload)
    for value in (hooks.secret.decode(), SMTP_PASSWORD, DEAD_SECRET):
        assert value not in everything


async def _attempted(setup: Setup, channel: str) -> list[Any]:
    return [r for r in await outbox_rows(setup, channel) if r.attempts > 0]
