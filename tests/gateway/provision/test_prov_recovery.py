"""Taking provisioned accounts away survives a gateway that dies and a target that is down:
the next start resumes every unfinished row, and an unreachable target is retried with
backoff until it confirms the removal."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import timedelta

from gateway.notify.settings import parse_channel
from gateway.provision.service import backoff
from gateway.provision.steps import account_name
from policy.service import SYSTEM_ACTOR
from tests.eventually import eventually
from tests.gateway.notify.receivers import Hooks
from tests.gateway.provision.conftest import ProvGateway, start_gateway
from tests.target import free_port, ssh_argv


async def test_a_gateway_down_at_expiry_removes_the_account_when_it_starts(
    pgw: ProvGateway, db_url: str
) -> None:
    await pgw.grant()
    rc, _, err = await pgw.ssh("alice", "alice+db01", "true")
    assert rc == 0, err
    [item] = await pgw.items("active")
    await pgw.node.stop("gateway shutdown")
    await pgw.timer.advance(timedelta(hours=2))

    pgw.node = await start_gateway(db_url, pgw.workdir / "node1", pgw.timer, "prov-node")
    done = await pgw.settled(item.id, "removed")
    assert done.reason == "grant expired"
    assert item.account not in pgw.target.passwd()


async def test_an_unreachable_target_is_retried_until_the_removal_is_confirmed(
    pgw: ProvGateway, db_url: str
) -> None:
    hooks = Hooks()
    await hooks.start()
    chat = {"name": "ops", "kind": "slack", "url": hooks.url("/slack")}
    await pgw.node.stop("gateway shutdown")
    pgw.node = await start_gateway(
        db_url,
        pgw.workdir / "node1",
        pgw.timer,
        "prov-node",
        [parse_channel({**chat, "events": ["provisioning.*"]})],
    )
    grant = await pgw.grant()
    rc, _, err = await pgw.ssh("alice", "alice+db01", "true")
    assert rc == 0, err
    [item] = await pgw.items("active")
    pgw.target.stop()
    await pgw.services.policy.revoke(SYSTEM_ACTOR, grant, "incident over")

    async def failed_attempts(n: int) -> bool:
        found = await pgw.services.provisioner.store.get(item.id)
        return found is not None and found.attempts >= n

    pgw.services.provisioner.wake()
    await eventually(lambda: failed_attempts(1), what="a first failed removal")
    await pgw.timer.advance(backoff(0))
    await eventually(lambda: failed_attempts(2), what="a retry after the backoff")
    still = await pgw.services.provisioner.store.get(item.id)
    assert still is not None and still.state == "revoking"
    assert "cannot reach db01" in (still.last_error or "")
    assert item.account in pgw.target.passwd()  # untouched while down...
    retries = pgw.node.metrics.provision_retries.labels("db01")._value.get()
    assert retries >= 2
    events = await pgw.services.audit.events()
    assert any(e.action == "provision.retry" and e.subject == item.subject for e in events)
    # people hear of it once, at the first failure (the metric and audit count every try)
    told = await eventually(lambda: hooks.slack, what="the cleanup-failed message")
    assert len(told) == 1
    text = told[0]["body"]["text"]
    assert f"Removing {item.account} from db01 failed" in text and "cannot reach db01" in text

    await asyncio.to_thread(pgw.target.start)
    await pgw.timer.advance(backoff(5))
    await pgw.settled(item.id, "removed")
    assert item.account not in pgw.target.passwd()  # ...and gone once it is back
    await hooks.stop()


GATE = """#!/bin/sh
while [ ! -e {dir}/go ]; do sleep 0.1; done
exec {dir}/install.real "$@"
"""


async def test_a_gateway_sigkilled_between_useradd_and_recording_is_cleaned_up_at_restart(
    pgw: ProvGateway, db_url: str
) -> None:
    """A real ``lockgate serve`` process is killed while the target's ``install`` (the step
    after useradd) is held; the row it leaves says ``creating``, the account exists."""
    grant = await pgw.grant()
    name = account_name("alice", grant)
    await pgw.node.stop("handing over to a serve process")
    node_dir = pgw.workdir / "node1"
    config = pgw.workdir / "serve.toml"
    ssh_port = free_port()
    config.write_text(f"""
[server]
ssh_listen = "127.0.0.1:{ssh_port}"
http_listen = "127.0.0.1:{free_port()}"
data_dir = "{node_dir / "data"}"
node_name = "prov-node"
workers = 1
[database]
url = "{db_url}"
[recordings]
path = "{node_dir / "recordings"}"
[[rules]]
name = "ops"
roles = ["dev"]
approvals = 0
groups = ["lgops", "lgdb"]
sudo = "/usr/bin/true"
""")
    gate_dir = pgw.target.dir
    (gate_dir / "install-gate").write_text(GATE.format(dir=gate_dir))
    (gate_dir / "install-gate").chmod(0o755)
    held = pgw.target.inside(
        f"cp /usr/bin/install {gate_dir}/install.real && "
        f"mount --bind {gate_dir}/install-gate /usr/bin/install"
    )
    assert held.returncode == 0, held.stderr
    serve = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert serve.stdout is not None
        banner = await asyncio.to_thread(serve.stdout.readline)
        assert banner.startswith("Lockgate node"), banner
        client = subprocess.Popen(
            [*ssh_argv(ssh_port, pgw.keys["alice"], "alice+db01"), "id"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await eventually(lambda: name in pgw.target.passwd(), what="useradd on the target")
    finally:
        serve.kill()  # SIGKILL: no shutdown handler runs
        serve.wait(30)
    client.wait(30)
    assert pgw.target.inside("umount -l /usr/bin/install").returncode == 0

    pgw.node = await start_gateway(db_url, node_dir, pgw.timer, "prov-node")
    items = await pgw.items()
    assert len(items) == 1, items
    [item] = items
    done = await pgw.settled(item.id, "failed")
    assert done.reason == "interrupted while being created"
    assert name not in pgw.target.passwd()
    assert not (pgw.target.root / "home" / name).exists()
