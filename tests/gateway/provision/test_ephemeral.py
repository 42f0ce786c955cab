"""Ephemeral accounts on a real sshd target: made at the first session of a grant, with
exactly the rule's groups and sudo, and nothing of them left once the grant ends."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from gateway.provision.steps import account_name
from gateway.provision.store import Item
from policy.service import SYSTEM_ACTOR
from tests.eventually import eventually
from tests.gateway.provision.conftest import ProvGateway
from tests.target import ssh_argv


async def test_ephemeral_account_exists_only_for_its_grant(pgw: ProvGateway) -> None:
    grant = await pgw.grant()
    rc, out, err = await pgw.ssh("alice", "alice+db01", "id")
    assert rc == 0, err
    [item] = await pgw.items("active")
    name = item.account
    assert name.startswith("lg-alice-") and len(name) <= 32
    assert f"uid={item.uid}({name})" in out and "lgops" in out
    assert pgw.target.passwd()[name][5] == f"/home/{name}"
    rc, _, _ = await pgw.ssh("alice", "alice+db01", "sudo -n true")
    assert rc == 0
    rc, _, err = await pgw.ssh("alice", "alice+db01", "sudo -n id")
    assert rc != 0  # the rule grants /usr/bin/true only
    rc, _, _ = await pgw.ssh("alice", "alice+db01", "nohup sleep 1000 >/dev/null 2>&1 &")
    assert rc == 0
    assert item.uid is not None and pgw.target.processes_of(item.uid)
    assert f"lockgate-{grant}" in pgw.target.sudoers_files()
    assert name in pgw.target.group_members("lgops")

    await pgw.timer.advance(timedelta(hours=1, minutes=1))
    await pgw.settled(item.id, "removed")
    assert name not in pgw.target.passwd()
    assert pgw.target.processes_of(item.uid) == []
    assert not [f for f in pgw.target.sudoers_files() if f.startswith("lockgate-")]
    assert name not in pgw.target.group_members("lgops")
    assert not (pgw.target.root / "home" / name).exists()
    rc, _, err = await pgw.ssh("alice", "alice+db01", "sudo -n true")
    assert rc != 0 and "no active grant" in err

    await pgw.grant()
    rc, out, err = await pgw.ssh("alice", "alice+db01", "id -u")
    assert rc == 0, err
    [again] = await pgw.items("active")
    assert again.account != name and again.uid != item.uid
    assert out.strip() == str(again.uid)

    async def audited() -> list[str]:
        events = await pgw.services.audit.events()
        return [e.action for e in events if e.subject == f"{name}@db01"]

    events = await pgw.services.audit.events()
    starts = [e for e in events if e.action == "session.start"]
    assert starts[0].details["upstream_account"] == name
    blob = json.dumps([e.details for e in events])
    provisioner_key = pgw.target.key_file.read_text().splitlines()[1]
    assert "PRIVATE KEY" not in blob and provisioner_key not in blob
    files = [p for p in (pgw.workdir / "node1" / "recordings").rglob("*") if p.is_file()]
    recorded = b"".join(p.read_bytes() for p in files)
    assert name.encode() in recorded  # the recordings name the account used
    assert b"PRIVATE KEY" not in recorded and provisioner_key.encode() not in recorded
    actions = await eventually(audited, what="audit of the removed account")
    provision = [a for a in actions if a.startswith("provision.")]
    assert provision == [
        "provision.creating",
        "provision.active",
        "provision.revoking",
        "provision.removed",
    ]


async def test_a_symlink_planted_at_the_home_path_is_not_followed(pgw: ProvGateway) -> None:
    grant = await pgw.grant()
    name = account_name("alice", grant)
    planted = pgw.target.root / "home" / name
    planted.symlink_to("/etc")  # inside the target, /etc is its own
    etc = pgw.target.root / "etc"
    before = (etc.stat().st_uid, etc.stat().st_mode)
    rc, _, err = await pgw.ssh("alice", "alice+db01", "id")
    assert rc != 0 and f"{name} could not be set up on db01" in err
    [item] = await pgw.items()
    failed = await pgw.settled(item.id, "failed")
    assert "already exists" in (failed.last_error or "")
    assert planted.is_symlink() and (etc.stat().st_uid, etc.stat().st_mode) == before
    assert not (etc / ".ssh").exists()
    assert name not in pgw.target.passwd()


async def test_two_grants_of_one_person_get_two_accounts(pgw: ProvGateway) -> None:
    target = await pgw.services.policy.get_target("db01")
    first, second = await pgw.grant(), await pgw.grant()
    provisioner = pgw.services.provisioner
    one = await provisioner.session_account("alice", target, "ephemeral", first)
    two = await provisioner.session_account("alice", target, "ephemeral", second)
    assert one != two
    passwd = pgw.target.passwd()
    assert passwd[one][2] != passwd[two][2]  # two UIDs


async def _live_session(pgw: ProvGateway) -> tuple[asyncio.subprocess.Process, str]:
    argv = [*ssh_argv(pgw.node.ssh_port, pgw.keys["alice"], "alice+db01"), "sleep 600"]
    client = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip

    async def live() -> str | None:
        found = [s for s in await pgw.services.sessions.list(SYSTEM_ACTOR) if s.active]
        active = await pgw.items("active")
        return found[0].id if found and active else None

    return client, await eventually(live, what="a live session on its ephemeral account")


async def test_an_admins_terminate_takes_the_account_away(pgw: ProvGateway) -> None:
    await pgw.grant()
    client, session = await _live_session(pgw)
    [item] = await pgw.items("active")
    await pgw.services.sessions.terminate(SYSTEM_ACTOR, session, "suspicious")
    done = await pgw.settled(item.id, "removed")
    assert done.reason is not None and "terminated by lockgate" in done.reason
    assert item.account not in pgw.target.passwd()
    await asyncio.wait_for(client.wait(), 30)


async def test_a_lock_on_the_person_takes_the_account_away(pgw: ProvGateway) -> None:
    await pgw.grant()
    client, _ = await _live_session(pgw)
    [item] = await pgw.items("active")
    await pgw.services.policy.lock(SYSTEM_ACTOR, "user", "alice", "offboarding")
    done = await pgw.settled(item.id, "removed")
    assert done.reason is not None and "locked" in done.reason
    assert item.account not in pgw.target.passwd()
    await asyncio.wait_for(client.wait(), 30)


async def test_a_target_with_a_home_archive_keeps_the_home_there(pgw: ProvGateway) -> None:
    await pgw.services.policy.set_target_provision(
        SYSTEM_ACTOR, "db01", home_archive="/home/lg-archive"
    )
    grant = await pgw.grant()
    rc, _, err = await pgw.ssh("alice", "alice+db01", "echo kept > ~/notes")
    assert rc == 0, err
    [item] = await pgw.items("active")
    await pgw.services.policy.revoke(SYSTEM_ACTOR, grant, "done")
    await pgw.settled(item.id, "removed")
    assert item.account not in pgw.target.passwd()
    [archived] = (pgw.target.root / "home" / "lg-archive").iterdir()
    assert archived.name.startswith(item.account + "-")
    assert (archived / "notes").read_text() == "kept\n"
    assert not (pgw.target.root / "home" / item.account).exists()


async def test_a_rule_can_make_the_account_at_approval(pgw: ProvGateway) -> None:
    """``provision_at = "approval"``: the account is there before the first session."""
    await pgw.services.policy.add_user(SYSTEM_ACTOR, "carol", roles=["early"])
    request = await pgw.services.policy.create_request(
        "carol", "db01", account=None, duration=timedelta(hours=1), reason="test"
    )
    assert request.grant_id
    await pgw.grant("alice")  # under a rule that provisions at the first session
    await pgw.services.provisioner.reconcile()

    async def made() -> list[Item]:
        return [i for i in await pgw.items("active") if i.grant_id == request.grant_id]

    [item] = await eventually(made, what="the account made at approval", timeout=60)
    assert item.account.startswith("lg-carol-") and item.account in pgw.target.passwd()
    assert item.account in pgw.target.group_members("lgops")
    assert [i.user for i in await pgw.items()] == ["carol"]  # nothing early for alice

    await pgw.timer.advance(timedelta(hours=1, minutes=1))
    await pgw.settled(item.id, "removed")
    assert item.account not in pgw.target.passwd()
