"""Taking provisioned accounts away survives a gateway that dies and a target that is down:
the next start resumes every unfinished row, and an unreachable target is retried with
backoff until it confirms the removal."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from gateway.provision.service import backoff
from policy.service import SYSTEM_ACTOR
from tests.eventually import eventually
from tests.gateway.provision.conftest import ProvGateway, start_gateway


async def test_a_gateway_that_died_mid_creation_removes_the_account_at_its_next_start(
    pgw: ProvGateway, db_url: str
) -> None:
    grant = await pgw.grant()
    provisioner = pgw.services.provisioner
    target = await pgw.services.policy.get_target("db01")
    name = provisioner.upstream_name("alice", target, "ephemeral", grant)
    # What a kill between the target's useradd and the row's "active" leaves behind: the
    # account exists on the target, its row still says creating.
    item, created = await provisioner.store.create(
        target, "account", name, grant, "alice", ("lgops",), (), owner="prov-node",
        now=pgw.timer.now(),
    )  # fmt: skip
    assert created
    await provisioner._create_account(item, target)
    assert name in pgw.target.passwd()
    await pgw.node.stop("crash")

    pgw.node = await start_gateway(db_url, pgw.workdir / "node1", pgw.timer, "prov-node")
    done = await pgw.settled(item.id, "failed")
    assert done.reason == "interrupted while being created"
    assert name not in pgw.target.passwd()
    assert await pgw.services.vault.credential_kind("db01", name) is None


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
    pgw: ProvGateway,
) -> None:
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

    await asyncio.to_thread(pgw.target.start)
    await pgw.timer.advance(backoff(5))
    await pgw.settled(item.id, "removed")
    assert item.account not in pgw.target.passwd()  # ...and gone once it is back
