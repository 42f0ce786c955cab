"""Web targets on two real nodes sharing one database, as behind a load balancer: each step
of the hand-off may reach either node, a target cookie issued by one is served by the other
(on its fast path, from its own memory, after one read of the database), and a kill made
through either node ends the sign-in on both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from gateway.app import Node
from gateway.web.routes import API
from policy.service import SYSTEM_ACTOR
from tests.eventually import eventually
from tests.gateway.http.conftest import GUARDED_RULE, WEB_RULE, Starter, WebTargets
from tests.nodes import start_test_node


@pytest.fixture
async def pair(
    start_web: Starter, db_url: str, tmp_path: Path
) -> AsyncIterator[tuple[WebTargets, Node]]:
    web = await start_web("host")
    workdir = tmp_path / "b"
    workdir.mkdir()
    server = replace(web.node.config.server, data_dir=workdir / "data", node_name="web-node-b")
    b = await start_test_node(
        db_url,
        workdir,
        name="web-node-b",
        rules=(WEB_RULE, GUARDED_RULE),
        timer=web.timer,
        server=server,
        peer=web.node,
    )
    try:
        yield web, b
    finally:
        await b.stop("test finished")


def _on(url: str, node: Node, web: WebTargets) -> str:
    """``url`` sent to ``node`` instead: what a load balancer in front of both does."""
    return url.replace(f":{web.port}/", f":{node.http_port}/", 1)


async def _redirect(browser: aiohttp.ClientSession, url: str) -> str:
    async with browser.get(url, allow_redirects=False) as resp:
        assert resp.status == 303, (resp.status, (await resp.text())[:300])
        location = resp.headers["Location"]
    return location


async def _page(browser: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with browser.get(url, allow_redirects=False) as resp:
        return resp.status, await resp.text()


async def test_a_hand_off_and_a_target_cookie_cross_nodes_and_a_kill_on_one_ends_both(
    pair: tuple[WebTargets, Node],
) -> None:
    web, b = pair
    a = web.node
    await web.grant("alice", "echo")
    browser = await web.browser("alice")  # signed in to the gateway (the database's row)
    # The hand-off, its steps alternating between the nodes.
    start = await _redirect(browser, f"{web.gateway}/open/echo")  # A: to the target's origin
    back = await _redirect(browser, _on(start, b, web))  # B: state cookie, back to the gateway
    assert "state=" in back
    handoff = await _redirect(browser, back.replace(f":{b.http_port}/", f":{web.port}/"))
    assert "/__lockgate/handoff?code=" in handoff  # the code was issued by A
    landing = await _redirect(browser, _on(handoff, b, web))  # B redeems it: the cookie
    assert landing == "/"
    status, _ = await _page(browser, handoff)  # the code served once, on any node
    assert status == 403
    # The cookie B issued is served by A (one read of the row), then on A's fast path.
    fast_before = a.metrics.http_fastpath._value.get()  # type: ignore[attr-defined]
    for path in ("first", "second"):
        status, _ = await _page(browser, web.base("echo") + path)
        assert status == 200
    assert a.metrics.http_fastpath._value.get() == fast_before + 1  # type: ignore[attr-defined]
    status, _ = await _page(browser, _on(web.base("echo"), b, web) + "third")
    assert status == 200
    seen = [str(s["raw_path"]) for s in web.echo.seen]
    assert seen[-3:] == ["/first", "/second", "/third"]
    # Each node opened its own live session for the sign-in.
    (on_a,) = [s for s in a.registry.sessions.values() if s.kind == "http"]
    (on_b,) = [s for s in b.registry.sessions.values() if s.kind == "http"]
    # An admin kills A's session through B's API: the sign-in ends on both nodes.
    token, _ = await a.services.policy.create_token(SYSTEM_ACTOR, "ada")
    async with (
        aiohttp.ClientSession() as admin,
        admin.post(
            f"http://127.0.0.1:{b.http_port}{API}/sessions/{on_a.id}/terminate",
            json={"reason": "INC-7 wrong account"},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp,
    ):
        assert resp.status in (200, 202), await resp.text()

    async def both_refuse() -> bool:
        pages = [
            await _page(browser, web.base("echo") + "after"),
            await _page(browser, _on(web.base("echo"), b, web) + "after"),
        ]
        return all("session terminated: terminated by ada: INC-7" in text for _, text in pages)

    await eventually(both_refuse, what="the sign-in ended on both nodes")
    assert on_a.ended and on_b.ended  # B's own session for the sign-in ended with it
    forwarded = len(web.echo.seen)
    for base in (web.base("echo"), _on(web.base("echo"), b, web)):
        for path in ("later", "later-again"):  # the fast path too: nothing reaches the app
            status, _ = await _page(browser, base + path)
            assert status == 403
    assert len(web.echo.seen) == forwarded
