"""Two real nodes on one database, as behind a load balancer: a browser signed in on one is
signed in on the other (pages and API), a sign-out or a lock on one ends it on both at once,
and password failures spread over both nodes lock the person out as on one node."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from gateway.app import Node
from gateway.web.auth import COOKIE
from gateway.web.routes import API
from policy.service import SYSTEM_ACTOR
from tests.eventually import eventually
from tests.nodes import start_test_node
from vault import totp

PASSWORD = "alice-correct-horse-battery"


@dataclass
class Pair:
    a: Node
    b: Node
    seed: bytes
    admin_token: str
    http: aiohttp.ClientSession

    def base(self, node: Node) -> str:
        return f"http://127.0.0.1:{node.http_port}"

    async def sign_in(
        self, node: Node, password: str = PASSWORD, step: int = 0
    ) -> tuple[int, str | None]:
        """(status, the session cookie's value) of a password + TOTP sign-in on ``node``
        (with the code of ``step`` steps ahead: each code serves once, cluster-wide)."""
        base = self.base(node)
        form = {
            "user": "alice",
            "password": password,
            "code": totp.code_at(self.seed, datetime.now(UTC) + timedelta(seconds=30 * step)),
            "next": "/",
        }
        async with self.http.post(
            base + "/login", data=form, headers={"Origin": base}, allow_redirects=False
        ) as response:
            morsel = response.cookies.get(COOKIE)
            return response.status, morsel.value if morsel is not None else None

    async def get(self, node: Node, path: str, cookie: str) -> tuple[int, str]:
        async with self.http.get(
            self.base(node) + path, headers={"Cookie": f"{COOKIE}={cookie}"}, allow_redirects=False
        ) as response:
            return response.status, await response.text()


@pytest.fixture
async def pair(db_url: str, tmp_path: Path) -> AsyncIterator[Pair]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = await start_test_node(db_url, tmp_path / "a", name="node-a")
    b = await start_test_node(db_url, tmp_path / "b", name="node-b", peer=a)
    http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    try:
        policy = a.services.policy
        await policy.add_user(SYSTEM_ACTOR, "alice", roles=["dev"], password=PASSWORD)
        uri = await a.services.vault.enroll_totp(SYSTEM_ACTOR, "alice")
        await policy.set_totp_enabled(SYSTEM_ACTOR, "alice", True)
        secret = parse_qs(urlsplit(uri).query)["secret"][0]
        seed = base64.b32decode(secret + "=" * (-len(secret) % 8))
        await policy.add_user(SYSTEM_ACTOR, "ada", roles=["admin"])
        token, _ = await policy.create_token(SYSTEM_ACTOR, "ada")
        yield Pair(a, b, seed, token, http)
    finally:
        await http.close()
        await b.stop("test finished")
        await a.stop("test finished")


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert found is not None, page[:300]
    return found.group(1)


async def test_a_sign_in_on_one_node_holds_on_the_other_until_a_sign_out_or_lock_anywhere(
    pair: Pair,
) -> None:
    status, cookie = await pair.sign_in(pair.a)
    assert status == 303 and cookie
    # Node B has never seen this browser: the page and the API answer it as alice.
    status, page_b = await pair.get(pair.b, "/", cookie)
    assert status == 200 and "alice" in page_b
    status, whoami = await pair.get(pair.b, API + "/whoami", cookie)
    assert status == 200 and '"alice"' in whoami
    # The CSRF token is the session's, whichever node rendered the page.
    status, page_a = await pair.get(pair.a, "/", cookie)
    assert _csrf(page_a) == _csrf(page_b)
    # A state change on B with the token of A's page; then sign-out on A.
    base_a = pair.base(pair.a)
    async with pair.http.post(
        base_a + "/logout",
        data={"csrf": _csrf(page_b)},
        headers={"Origin": base_a, "Cookie": f"{COOKIE}={cookie}"},
        allow_redirects=False,
    ) as response:
        assert response.status == 303
    # At once, on both nodes: no waiting for an event.
    assert (await pair.get(pair.b, API + "/whoami", cookie))[0] == 401
    status, _ = await pair.get(pair.b, "/", cookie)
    assert status in (302, 303)
    assert (await pair.get(pair.a, API + "/whoami", cookie))[0] == 401
    # Signed in again on B; an admin's lock made through A signs alice out everywhere.
    _, cookie = await pair.sign_in(pair.b, step=1)
    assert cookie and (await pair.get(pair.a, API + "/whoami", cookie))[0] == 200
    async with pair.http.post(
        pair.base(pair.a) + API + "/locks",
        json={"kind": "user", "name": "alice", "reason": "INC-9 stolen laptop"},
        headers={"Authorization": f"Bearer {pair.admin_token}"},
    ) as response:
        assert response.status in (200, 201), await response.text()

    async def refused() -> bool:
        statuses = [(await pair.get(node, API + "/whoami", cookie))[0] for node in (pair.a, pair.b)]
        return statuses == [401, 401]

    await eventually(refused, what="the browser session ended on both nodes")


async def test_password_failures_spread_over_two_nodes_lock_out_as_on_one(pair: Pair) -> None:
    for node in (pair.a, pair.b, pair.a, pair.b, pair.a):  # five: the pair's limit
        status, cookie = await pair.sign_in(node, password="not-alices-password")
        assert status == 401 and cookie is None
    # Now the right password and code fail too, on either node.
    for node in (pair.b, pair.a):
        status, cookie = await pair.sign_in(node)
        assert status == 401 and cookie is None
    failures = [
        e.details.get("method")
        for e in await pair.a.services.audit.events()
        if e.action == "auth.failure"
    ]
    assert failures == ["password+totp"] * 5 + ["throttled"] * 2
