"""End-to-end fixtures: a real sshd target and a real gateway, driven by real OpenSSH clients.

The sshd runs on a free loopback port with its own configuration, host key and a dedicated
unix account (created once with useradd; tests run as root, as CI does). The gateway is a
real node (``start_node``) in the test's event loop on port 0, on the test database, with a
fake clock.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.services import Services
from gateway.sessions.killswitch import KillSwitch
from gateway.ssh.listener import SshGateway
from policy.models import Rule
from policy.service import SYSTEM_ACTOR, PolicyService
from recorder.anomaly import AnomalyRule
from tests.clock import FakeTimer
from tests.nodes import start_test_node
from tests.target import TARGET_USER, Sshd, free_port, register_target, ssh_argv  # noqa: F401


@dataclass
class Client:
    name: str
    key_file: Path


@dataclass
class Gateway:
    port: int
    services: Services
    gw: SshGateway
    timer: FakeTimer
    killswitch: KillSwitch
    sshd: Sshd
    workdir: Path
    clients: dict[str, Client] = field(default_factory=dict)

    @property
    def policy(self) -> PolicyService:
        return self.services.policy

    def ssh_args(self, user: str, login: str, *extra: str) -> list[str]:
        return ssh_argv(self.port, self.clients[user].key_file, login, *extra)

    async def run(
        self, argv: list[str], stdin: bytes = b"", timeout: float = 60
    ) -> tuple[int, bytes, bytes]:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        return proc.returncode or 0, out, err

    async def ssh(
        self, user: str, login: str, *command: str, stdin: bytes = b"", extra: tuple[str, ...] = ()
    ) -> tuple[int, bytes, bytes]:
        return await self.run([*self.ssh_args(user, login, *extra), *command], stdin)

    async def grant(
        self,
        user: str,
        account: str = TARGET_USER,
        target: str = "db01",
        duration: timedelta = timedelta(hours=1),
    ) -> str:
        req = await self.policy.create_request(
            user, target, account=account, duration=duration, reason="e2e test"
        )
        if req.grant_id is None:
            await self.policy.approve("bob", req.id)
            req = await self.policy.get_request(SYSTEM_ACTOR, req.id)
        assert req.grant_id
        return req.grant_id


RULES = [
    Rule(
        name="dev",
        roles=frozenset({"dev"}),
        approvals=1,
        approver_roles=frozenset({"approver"}),
        require_reason=True,
    ),
    Rule(
        name="fwd",
        roles=frozenset({"forwarder"}),
        approvals=0,
        require_reason=False,
        channels=frozenset({"shell", "exec", "sftp", "port_forward"}),
        forward_to=("127.0.0.2:*",),  # the echo server's address; the sshd is on 127.0.0.1
    ),
]
HERE = Path(__file__).resolve().parent
ANOMALIES = [
    AnomalyRule("no-wipe", "command", __import__("re").compile(r"rm\s+-rf\s+/"), "kill"),
    AnomalyRule("no-shutdown", "command", __import__("re").compile(r"\bshutdown\b"), "block"),
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this directory that needs the real sshd target is end to end (``-m e2e``,
    which README's test command runs again with the fast path off)."""
    for item in items:
        if HERE in item.path.parents and "sshd" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
async def gateway(db_url: str, sshd: Sshd, tmp_path: Path) -> AsyncIterator[Gateway]:
    timer = FakeTimer(datetime.now(UTC))
    node = await start_test_node(
        db_url,
        tmp_path,
        name="test-node",
        rules=tuple(RULES),
        anomaly_rules=tuple(ANOMALIES),
        timer=timer,
        recordings_path=tmp_path / "recordings",
    )
    harness = Gateway(
        node.ssh_port, node.services, node.gateway, timer, node.killswitch, sshd, tmp_path
    )
    try:
        policy = node.services.policy
        for name, roles in (
            ("alice", ["dev"]),
            ("bob", ["approver"]),
            ("fred", ["forwarder"]),
            ("mallory", ["dev"]),
        ):
            key_file = tmp_path / f"id_{name}"
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_file)], check=True
            )
            await policy.add_user(
                SYSTEM_ACTOR,
                name,
                roles=roles,
                public_keys=[(tmp_path / f"id_{name}.pub").read_text()],
            )
            harness.clients[name] = Client(name, key_file)
        await register_target(node.services, sshd)
        yield harness
    finally:
        await node.stop("test finished")


os.environ.setdefault("LANG", "C.UTF-8")
