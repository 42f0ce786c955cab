"""A real gateway node serving web targets, real upstream apps, and browsers (aiohttp clients
with their own cookie jars) that resolve ``*.gw.test`` to the node."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from gateway.app import Node
from gateway.config import Listen, ServerConfig
from gateway.http.session import LiveHttpSession
from gateway.web.auth import COOKIE
from policy.models import Rule
from policy.service import SYSTEM_ACTOR
from tests.clock import FakeTimer
from tests.gateway.http.upstreams import (
    BASIC_PASSWORD,
    BASIC_USER,
    BEARER_TOKEN,
    Echo,
    Served,
    basic_app,
    bearer_app,
    echo_upstream,
    login_app,
    serve,
)
from tests.nodes import start_test_node
from vault.secret import Secret

DOMAIN = "gw.test"
ECHO_KEY = "canary-echo-key-9d3e1f"
WEB_RULE = Rule(
    name="web",
    roles=frozenset({"dev"}),
    targets=("echo", "grafana", "api", "shop", "tls", "db_01"),
    approvals=0,
    require_reason=False,
    channels=frozenset({"http"}),
)
GUARDED_RULE = Rule(
    name="guarded",
    roles=frozenset({"dev"}),
    targets=("vault-ui",),
    approvals=1,
    approver_roles=frozenset({"admin"}),
    require_reason=False,
    channels=frozenset({"http"}),
)
SECRETS = (BASIC_PASSWORD, BEARER_TOKEN, ECHO_KEY)


class LoopbackResolver(AbstractResolver):
    """Every name resolves to 127.0.0.1 (the node and the test's hosts live there)."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


@dataclass
class WebTargets:
    node: Node
    timer: FakeTimer
    echo: Echo
    mode: str  # host | path
    browsers: list[aiohttp.ClientSession] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.node.http_port

    @property
    def gateway(self) -> str:
        host = DOMAIN if self.mode == "host" else "127.0.0.1"
        return f"http://{host}:{self.port}"

    def base(self, target: str) -> str:
        """The target's root URL as the browser sees it."""
        if self.mode == "host":
            return f"http://{target}.{DOMAIN}:{self.port}/"
        return f"http://127.0.0.1:{self.port}/t/{target}/"

    def origin(self, target: str) -> str:
        return self.base(target).split("/t/")[0].rstrip("/")

    @property
    def policy(self) -> Any:
        return self.node.services.policy

    async def browser(self, user: str | None = "alice") -> aiohttp.ClientSession:
        """A browser, signed in to the gateway as ``user`` (None: not signed in)."""
        client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=LoopbackResolver(), force_close=False),
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            auto_decompress=False,
        )
        self.browsers.append(client)
        if user is not None:
            assert self.node.deps is not None
            value, _ = await self.node.deps.browser.create(user)
            client.cookie_jar.update_cookies({COOKIE: value}, URL(self.gateway + "/"))
        return client

    async def open(
        self, client: aiohttp.ClientSession, target: str, path: str = ""
    ) -> aiohttp.ClientResponse:
        """Follow the "Open" link through the hand-off; the landing page's response."""
        query = f"?{urlencode({'next': path})}" if path else ""
        response = await client.get(f"{self.gateway}/open/{target}{query}")
        await response.read()
        return response

    def sessions(self, target: str | None = None) -> list[LiveHttpSession]:
        found = [s for s in self.node.registry.sessions.values() if s.kind == "http"]
        return [s for s in found if target is None or s.target == target]  # type: ignore[misc]

    async def grant(self, user: str, target: str) -> str:
        request = await self.policy.create_request(user, target, duration=timedelta(hours=1))
        assert request.grant_id, "the web rule approves at once"
        return str(request.grant_id)


class Starter(Protocol):
    def __call__(
        self,
        mode: str,
        *,
        rules: tuple[Rule, ...] = ...,
        anomaly: tuple[Any, ...] = ...,
        fastpath: bool = ...,
    ) -> Awaitable[WebTargets]: ...


@pytest.fixture
async def start_web(db_url: str, tmp_path: Path) -> AsyncIterator[Starter]:
    """Start a node in ``host`` (per-target origins under gw.test) or ``path`` mode, with
    the upstream apps as targets and their credentials in the vault."""
    stops: list[Callable[[], Awaitable[None]]] = []
    echo_gen = echo_upstream(tmp_path)

    async def start(
        mode: str,
        *,
        rules: tuple[Rule, ...] = (WEB_RULE, GUARDED_RULE),
        anomaly: tuple[Any, ...] = (),
        fastpath: bool = True,
    ) -> WebTargets:
        echo, echo_served = await echo_gen.__anext__()
        others: dict[str, Served] = {
            "grafana": await serve(basic_app()),
            "api": await serve(bearer_app()),
            "shop": await serve(login_app()),
        }
        timer = FakeTimer(datetime.now(UTC))
        server = ServerConfig(
            ssh_listen=Listen("127.0.0.1", 0),
            http_listen=Listen("127.0.0.1", 0),
            data_dir=tmp_path / "data",
            node_name="web-node",
            web_domain=DOMAIN if mode == "host" else "",
            http_fastpath=fastpath,
        )
        node = await start_test_node(
            db_url,
            tmp_path,
            name="web-node",
            rules=rules,
            anomaly_rules=anomaly,
            timer=timer,
            server=server,
        )
        policy, vault = node.services.policy, node.services.vault
        for name, roles in (("alice", ["dev"]), ("mallory", ["dev"]), ("ada", ["admin"])):
            await policy.add_user(SYSTEM_ACTOR, name, roles=roles)
        urls = {"echo": echo_served.url + "/", **{k: v.url + "/" for k, v in others.items()}}
        urls["vault-ui"] = echo_served.url + "/"
        urls["db_01"] = echo_served.url + "/"
        for name, url in urls.items():
            await policy.add_target(SYSTEM_ACTOR, name, kind="http", url=url, accounts=["svc"])
        await vault.set_credential(
            SYSTEM_ACTOR, "grafana", "svc", "http_basic", Secret(BASIC_PASSWORD),
            public={"username": BASIC_USER},
        )  # fmt: skip
        for name in ("api", "shop"):
            await vault.set_credential(
                SYSTEM_ACTOR, name, "svc", "http_header", Secret(f"Bearer {BEARER_TOKEN}"),
                public={"header": "Authorization"},
            )  # fmt: skip
        for name in ("echo", "vault-ui", "db_01"):
            await vault.set_credential(
                SYSTEM_ACTOR, name, "svc", "http_header", Secret(ECHO_KEY),
                public={"header": "X-Api-Key"},
            )  # fmt: skip
        web = WebTargets(node, timer, echo, mode)

        async def stop() -> None:
            for client in web.browsers:
                await client.close()
            await node.stop("test finished")
            for served in others.values():
                await served.runner.cleanup()

        stops.append(stop)
        return web

    yield start
    for stop in stops:
        await stop()
    await echo_gen.aclose()


@pytest.fixture
async def web(start_web: Starter) -> WebTargets:
    return await start_web("host")


@pytest.fixture
async def path_web(start_web: Starter) -> WebTargets:
    return await start_web("path")
