"""Fixtures for provisioned targets: a real sshd in its own namespaces (tests/nstarget.py)
registered as an ephemeral-mode target with its provisioner key, and a real gateway node on
the test database with a fake clock, driven by real OpenSSH clients."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.app import Node, start_node
from gateway.config import load_config
from gateway.notify.settings import Channel
from gateway.provision.store import Item
from gateway.services import Services
from policy.models import Rule
from policy.service import SYSTEM_ACTOR
from tests.clock import FakeTimer
from tests.eventually import eventually
from tests.nodes import start_test_node
from tests.nstarget import PERSON, PROVISIONER, NsTarget, make_target
from tests.target import ssh_argv
from vault.secret import Secret

RULES = (
    Rule(
        name="ops",
        roles=frozenset({"dev"}),
        approvals=0,
        require_reason=True,  # so connecting does not request a grant by itself
        groups=("lgops", "lgdb"),
        sudo=("/usr/bin/true",),
    ),
    Rule(
        name="early",
        roles=frozenset({"early"}),
        approvals=0,
        require_reason=True,
        groups=("lgops",),
        provision_at="approval",
    ),
)


@dataclass
class ProvGateway:
    node: Node
    timer: FakeTimer
    target: NsTarget
    workdir: Path
    keys: dict[str, Path] = field(default_factory=dict)

    @property
    def services(self) -> Services:
        return self.node.services

    async def ssh(self, user: str, login: str, *command: str) -> tuple[int, str, str]:
        argv = [*ssh_argv(self.node.ssh_port, self.keys[user], login), *command]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode(), err.decode()

    async def grant(self, user: str = "alice", duration: timedelta = timedelta(hours=1)) -> str:
        req = await self.services.policy.create_request(
            user, "db01", account=None, duration=duration, reason="test"
        )
        assert req.grant_id
        return req.grant_id

    async def items(self, state: str | None = None) -> list[Item]:
        found = await self.services.provisioner.list("db01")
        return [i for i in found if state is None or i.state == state]

    async def settled(self, item_id: str, state: str) -> Item:
        async def reached() -> Item | None:
            item = await self.services.provisioner.store.get(item_id)
            return item if item is not None and item.state == state else None

        return await eventually(reached, what=f"{item_id} {state}", timeout=60)


@pytest.fixture
def nstarget() -> Iterator[NsTarget]:
    target = make_target()
    target.start()
    try:
        yield target
    finally:
        target.close()


async def start_gateway(
    db_url: str,
    workdir: Path,
    timer: FakeTimer,
    name: str,
    notifications: Sequence[Channel] = (),
) -> Node:
    """A node on ``workdir``; a second call with the same ``workdir`` is the same node
    starting again (same data directory, master key and name), as after a crash."""
    if (workdir / "data").exists():
        config = replace(
            load_config(
                None,
                environ={
                    "LOCKGATE_SERVER_DATA_DIR": str(workdir / "data"),
                    "LOCKGATE_DATABASE_URL": db_url,
                    "LOCKGATE_SERVER_SSH_LISTEN": "127.0.0.1:0",
                    "LOCKGATE_SERVER_HTTP_LISTEN": "127.0.0.1:0",
                    "LOCKGATE_SERVER_NODE_NAME": name,
                },
            ),
            recordings_path=workdir / "recordings",
            notifications=list(notifications),
        )
        return await start_node(config, timer=timer, extra_rules=RULES)
    workdir.mkdir(parents=True, exist_ok=True)
    return await start_test_node(
        db_url,
        workdir,
        name=name,
        rules=RULES,
        timer=timer,
        recordings_path=workdir / "recordings",
        notifications=list(notifications),
    )


async def register(services: Services, target: NsTarget, mode: str = "ephemeral") -> None:
    """The target as ``db01``: ephemeral (default account ``ephemeral``), or elevate with the
    standing account ``lgperson`` and its vaulted key."""
    policy = services.policy
    await policy.add_target(
        SYSTEM_ACTOR,
        "db01",
        host="127.0.0.1",
        port=target.port,
        host_key=target.host_key,
        accounts=[PERSON] if mode == "elevate" else [],
        provision=mode,
    )
    if mode == "elevate":
        await services.vault.set_credential(
            SYSTEM_ACTOR, "db01", PERSON, "private_key", Secret(target.person_key.read_bytes())
        )
    await services.vault.set_credential(
        SYSTEM_ACTOR,
        "db01",
        "@provisioner",
        "provisioner",
        Secret(target.key_file.read_bytes()),
        public={"username": PROVISIONER},
    )


@pytest.fixture
def mode() -> str:
    return "ephemeral"


@pytest.fixture
async def pgw(
    db_url: str, nstarget: NsTarget, tmp_path: Path, mode: str
) -> AsyncIterator[ProvGateway]:
    timer = FakeTimer(datetime.now(UTC))
    node = await start_gateway(db_url, tmp_path / "node1", timer, "prov-node")
    harness = ProvGateway(node, timer, nstarget, tmp_path)
    try:
        for name in ("alice", "bob"):
            key = tmp_path / f"id_{name}"
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
            )
            await node.services.policy.add_user(
                SYSTEM_ACTOR, name, roles=["dev"], public_keys=[key.with_suffix(".pub").read_text()]
            )
            harness.keys[name] = key
        await register(node.services, nstarget, mode)
        yield harness
    finally:
        await harness.node.stop("test finished")
