"""An OpenID sign-in started on one node and finished on another (the provider's redirect
reaches whichever node the load balancer picks), against a real oidc-provider."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from gateway.db.tables import oidc_flows
from gateway.web.auth import COOKIE
from gateway.web.routes import API
from tests.gateway.oidc.conftest import RULES, Starter
from tests.nodes import start_test_node

pytestmark = pytest.mark.timeout(120)


async def test_a_sign_in_started_on_one_node_completes_on_another_once(
    start_corp: Starter, db_url: str
) -> None:
    corp = await start_corp()
    workdir = corp.workdir / "node-b"
    workdir.mkdir()
    b = await start_test_node(
        db_url,
        workdir,
        name="oidc-b",
        rules=RULES,
        timer=corp.timer,
        oidc=(corp.provider,),
        peer=corp.node,  # the cluster's master key: B reads the client secret A stored
    )
    try:
        agent = corp.agent()
        authorize = await agent.redirected(f"{corp.base}/auth/oidc/corp/start?next=/")
        callback = await agent.sign_in_at_provider(authorize, "alice", corp.callback)
        async with corp.node.services.maker() as db:
            (row,) = (await db.execute(sa.select(oidc_flows))).all()
        # Only digests in the row: neither state nor the binding cookie, nonce or verifier.
        state = callback.split("state=")[1].split("&")[0]
        assert state not in repr(tuple(row)) and row.state_hash != state
        on_b = callback.replace(f":{corp.node.http_port}/", f":{b.http_port}/", 1)
        status, body, _ = await agent.get(on_b)
        assert status == 200 and "Signed in" in body, body[:300]
        cookie = next(c.value for c in agent.http.cookie_jar if c.key == COOKIE)
        for node in (corp.node, b):
            async with agent.http.get(
                f"http://127.0.0.1:{node.http_port}{API}/whoami",
                headers={"Cookie": f"{COOKIE}={cookie}"},
            ) as response:
                assert response.status == 200 and '"alice"' in await response.text()
        # The flow served once: the same callback on the first node is refused.
        status, body, _ = await agent.get(callback)
        assert status == 403 and "not started here or has expired" in body
        async with corp.node.services.maker() as db:
            assert (await db.execute(sa.select(oidc_flows))).all() == []
    finally:
        await b.stop("test finished")
