"""A node with ``[[auth.oidc]]`` ``corp`` pointing at a real oidc-provider (behind a real
pass-through proxy, whose URL is the issuer), people in its groups, and a fake clock."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Node
from gateway.oidc.settings import OidcProvider, parse_provider
from policy.models import Rule
from policy.service import SYSTEM_ACTOR
from tests.clock import FakeTimer
from tests.nodes import start_test_node
from tests.oidc.idp import Agent, Provider, Proxy, account, client, rsa_jwk, start_provider
from vault.secret import Secret

CLIENT_SECRET = "corp-client-secret-6f2b9a"
RULES = (
    Rule(
        name="dev",
        roles=frozenset({"dev"}),
        approvals=1,
        approver_roles=frozenset({"approver"}),
        require_reason=True,
    ),
)
CORP = {
    "name": "corp",
    "client_id": "lockgate",
    "auto_create": True,
    "role_mappings": {
        "sre-*": ["dev"],
        "sec-approvers": ["approver"],
        "/^admins-(eu|us)$/": ["admin"],
    },
}
PEOPLE = {
    "alice": account("alice", ["sre-db", "staff"]),
    "bob": account("bob", ["sec-approvers"]),
    "eve": account("eve", ["sre-web"], email_verified=False),
}


@dataclass
class Corp:
    node: Node
    idp: Provider
    proxy: Proxy
    timer: FakeTimer
    provider: OidcProvider
    workdir: Path
    jwk: dict[str, Any]
    agents: list[Agent] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.node.http_port}"

    @property
    def callback(self) -> str:
        return f"{self.base}/auth/oidc/corp/callback"

    def agent(self) -> Agent:
        agent = Agent()
        self.agents.append(agent)
        return agent

    async def sign_in(self, agent: Agent, login: str) -> tuple[int, str]:
        """The whole flow with ``agent``: (status, body) of the gateway's callback."""
        authorize = await agent.redirected(f"{self.base}/auth/oidc/corp/start?next=/")
        callback = await agent.sign_in_at_provider(authorize, login, self.callback)
        status, body, _ = await agent.get(callback)
        return status, body

    async def csrf(self, agent: Agent) -> str:
        status, body, _ = await agent.get(f"{self.base}/")
        assert status == 200, body[:300]
        found = re.search(r'name="csrf-token" content="([^"]+)"', body)
        assert found is not None
        return found.group(1)

    async def audit(self, action: str) -> list[Any]:
        return [e for e in await self.node.services.audit.events() if e.action == action]


Starter = Callable[..., Awaitable[Corp]]


@pytest.fixture
async def start_corp(db_url: str, tmp_path: Path) -> AsyncIterator[Starter]:
    started: list[Corp] = []
    stops: list[Callable[[], Awaitable[None]]] = []

    async def start(
        rules: tuple[Rule, ...] = RULES, others: tuple[OidcProvider, ...] = (), **overrides: Any
    ) -> Corp:
        proxy = Proxy()
        await proxy.start()
        stops.append(proxy.stop)
        provider = parse_provider({**CORP, "issuer": proxy.url, **overrides})
        timer = FakeTimer(datetime.now(UTC))
        workdir = tmp_path / f"node{len(started)}"
        workdir.mkdir()
        node = await start_test_node(
            db_url,
            workdir,
            name=f"oidc{len(started)}",
            rules=rules,
            timer=timer,
            oidc=(provider, *others),
        )
        stops.append(node.stop)
        await node.services.vault.set_credential(
            SYSTEM_ACTOR, "lockgate:oidc", "corp", "oidc_client_secret", Secret(CLIENT_SECRET)
        )
        jwk = rsa_jwk("k1")
        callback = f"http://127.0.0.1:{node.http_port}/auth/oidc/corp/callback"
        idp = await start_provider(
            tmp_path,
            clients=[client("lockgate", CLIENT_SECRET, [callback])],
            accounts={k: dict(v) for k, v in PEOPLE.items()},
            jwk=jwk,
            issuer=proxy.url,
        )
        proxy.backend = idp.url
        corp = Corp(node, idp, proxy, timer, provider, tmp_path, jwk)
        stops.append(lambda: corp.idp.stop())  # the provider a test may have put in its place
        started.append(corp)
        return corp

    yield start
    for corp in started:
        for agent in corp.agents:
            await agent.aclose()
    for stop in reversed(stops):
        await stop()


async def advance(corp: Corp, delta: timedelta) -> None:
    await corp.timer.advance(delta)
