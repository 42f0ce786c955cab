"""A real gateway node (``start_node``: SSH, HTTP, cluster bus) on ports 0 with the test
database, people in every role, a real sshd target, and an HTTP client that speaks as any of
them."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from gateway.app import Node
from gateway.web.routes import API
from policy.models import Rule
from policy.service import SYSTEM_ACTOR
from recorder.anomaly import AnomalyRule
from tests.eventually import eventually
from tests.nodes import start_test_node
from tests.target import TARGET_USER, Sshd, register_target, ssh_argv
from vault import totp

RULES = (
    Rule(
        name="dev",
        roles=frozenset({"dev"}),
        approvals=1,
        approver_roles=frozenset({"approver"}),
        require_reason=True,
    ),
)
# An alert only (the session goes on), on a word no other test types: the report's anomaly hits.
ANOMALIES = (AnomalyRule("canary", "command", re.compile(r"lockgate-canary-word"), "alert"),)
# role name in the tests -> (user, roles)
PEOPLE = {
    "requester": ("alice", ["dev"]),
    "other": ("mallory", ["dev"]),
    "approver": ("bob", ["approver"]),
    "auditor": ("audrey", ["auditor"]),
    "admin": ("ada", ["admin", "approver"]),
}
ROLES = ("anonymous", *PEOPLE)
TLS_PROXY = "127.0.0.2"  # the one address the web node trusts as its TLS proxy


@dataclass
class Web:
    node: Node
    sshd: Sshd
    workdir: Path
    http: aiohttp.ClientSession
    tokens: dict[str, str] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    totp_seeds: dict[str, bytes] = field(default_factory=dict)
    keys: dict[str, Path] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.node.http_port}"

    @property
    def policy(self) -> Any:
        return self.node.services.policy

    def user(self, role: str) -> str:
        return PEOPLE[role][0]

    async def call(
        self,
        method: str,
        path: str,
        role: str = "anonymous",
        *,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, Any]:
        """(status, parsed JSON or text, headers) as ``role`` with its bearer token."""
        hdrs = dict(headers or {})
        if role != "anonymous":
            hdrs["Authorization"] = f"Bearer {self.tokens[role]}"
        async with self.http.request(
            method, self.base + path, json=json, data=data, headers=hdrs
        ) as response:
            raw = await response.read()
            ctype = response.headers.get("Content-Type", "")
            body: Any = raw.decode(errors="replace")
            if "json" in ctype and raw:
                import json as _json

                body = _json.loads(raw)
            return response.status, body, response.headers

    async def indexed_recording(self, session_id: str, role: str = "requester") -> Any:
        """The recording's facts once its sealed recording is indexed (a child process
        indexes it just after the seal)."""

        async def indexed() -> Any:
            status, info, _ = await self.call("GET", f"{API}/recordings/{session_id}", role)
            return info if status == 200 and info["indexed"] else None

        return await eventually(indexed, interval=0.1, what=f"recording {session_id} indexed")

    def totp_code(self, role: str, when: datetime | None = None) -> str:
        return totp.code_at(self.totp_seeds[role], when or datetime.now(UTC))

    def ssh_argv(self, role: str, login: str, *command: str) -> list[str]:
        return [*ssh_argv(self.node.ssh_port, self.keys[role], login), *command]

    async def grant(self, role: str = "requester") -> tuple[str, str]:
        """An approved request (by the approver) for ``role`` on db01: (request, grant)."""
        user = self.user(role)
        for old in await self.policy.list_requests(user, pending_only=True, mine_only=True):
            await self.policy.cancel(user, old.id)
        req = await self.policy.create_request(
            user, "db01", account=TARGET_USER, duration=timedelta(hours=1), reason="INC-1 test"
        )
        await self.policy.approve("bob", req.id, "ok")
        req = await self.policy.get_request(SYSTEM_ACTOR, req.id)
        assert req.grant_id
        return req.id, req.grant_id

    async def live_session(self, role: str = "requester") -> tuple[asyncio.subprocess.Process, str]:
        """A granted SSH session of ``role`` running a command on db01: (ssh, session id)."""
        await self.grant(role)
        proc = await asyncio.create_subprocess_exec(
            *self.ssh_argv(
                role, f"{self.user(role)}+{TARGET_USER}@db01", "echo started; sleep 120"
            ),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        # Running on the target: the channel is authorized (a kill before that is a refusal).
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 60) == b"started\n"
        live = await eventually(
            lambda: [s for s in self.node.registry.sessions.values() if s.user == self.user(role)],
            what="the session to start",
        )
        return proc, live[0].id


def _seed(uri: str) -> bytes:
    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    return base64.b32decode(secret + "=" * (-len(secret) % 8))


@pytest.fixture
async def web(db_url: str, sshd: Sshd, tmp_path: Path) -> AsyncIterator[Web]:
    node = await start_test_node(
        db_url,
        tmp_path,
        name="web-node",
        rules=RULES,
        anomaly_rules=ANOMALIES,
        server_fields={"trusted_proxies": (ipaddress.ip_network(f"{TLS_PROXY}/32"),)},
    )
    http = aiohttp.ClientSession()
    harness = Web(node, sshd, tmp_path, http)
    try:
        policy = node.services.policy
        for role, (name, roles) in PEOPLE.items():
            key = tmp_path / f"id_{name}"
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
            )
            password = f"pw-{name}-correct-horse"
            await policy.add_user(
                SYSTEM_ACTOR,
                name,
                roles=roles,
                public_keys=[(tmp_path / f"id_{name}.pub").read_text()],
                password=password,
            )
            uri = await node.services.vault.enroll_totp(SYSTEM_ACTOR, name)
            await policy.set_totp_enabled(SYSTEM_ACTOR, name, True)
            token, _ = await policy.create_token(SYSTEM_ACTOR, name)
            harness.tokens[role] = token
            harness.passwords[role] = password
            harness.totp_seeds[role] = _seed(uri)
            harness.keys[role] = key
        await register_target(node.services, sshd)
        yield harness
    finally:
        await http.close()
        await node.stop("test finished")
