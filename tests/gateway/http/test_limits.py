"""What a grant's rule and the anomaly rules allow of each web request, and https upstreams
whose certificate is or is not the one the target trusts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from yarl import URL

from policy.service import SYSTEM_ACTOR
from recorder.anomaly import parse_anomaly_rule
from tests.gateway.http.certs import self_signed
from tests.gateway.http.conftest import GUARDED_RULE, WEB_RULE, Starter
from tests.gateway.http.upstreams import Echo, echo_app, serve
from vault.secret import Secret


async def test_methods_and_paths_outside_the_rule_get_a_page_and_never_reach_the_app(
    start_web: Starter,
) -> None:
    read_only = dataclasses.replace(
        WEB_RULE, http_methods=("GET", "HEAD"), http_paths=("/", "/public/*")
    )
    web = await start_web("host", rules=(read_only, GUARDED_RULE))
    await web.grant("alice", "echo")
    browser = await web.browser("alice")
    await web.open(browser, "echo")
    before = len(web.echo.seen)
    async with browser.post(web.base("echo") + "public/x", data=b"x") as resp:
        assert resp.status == 403
        assert "does not allow POST /public/x" in await resp.text()
    async with browser.get(web.base("echo") + "admin/users") as resp:
        assert resp.status == 403
        assert "does not allow GET /admin/users" in await resp.text()
    async with browser.get(URL(web.base("echo") + "public/%2e%2e/admin", encoded=True)) as resp:
        assert resp.status == 400  # ambiguous: refused before any rule is asked
    async with browser.get(URL(web.base("echo") + "public/a%2Fb", encoded=True)) as resp:
        assert resp.status == 403  # policy refuses an encoded slash
    assert len(web.echo.seen) == before
    async with browser.get(web.base("echo") + "public/page") as resp:
        assert resp.status == 200


async def test_a_block_rule_refuses_the_request_and_a_kill_rule_ends_the_session(
    start_web: Starter,
) -> None:
    rules = (
        parse_anomaly_rule(
            {"name": "no-delete", "match": "http", "pattern": "^DELETE ", "action": "block"}
        ),
        parse_anomaly_rule(
            {"name": "no-export", "match": "http", "pattern": "/export", "action": "kill"}
        ),
    )
    web = await start_web("host", anomaly=rules)
    await web.grant("alice", "echo")
    browser = await web.browser("alice")
    await web.open(browser, "echo")
    before = len(web.echo.seen)
    async with browser.delete(web.base("echo") + "things/1") as resp:
        assert resp.status == 403
        assert "blocked by rule no-delete" in await resp.text()
    async with browser.get(web.base("echo") + "data/export") as resp:
        assert resp.status == 403
        assert "session terminated: anomaly rule no-export" in await resp.text()
    assert len(web.echo.seen) == before
    assert web.sessions("echo") == []


async def test_an_upstream_with_an_untrusted_certificate_gets_a_clear_page(
    start_web: Starter, tmp_path: Path
) -> None:
    cert = self_signed()
    served = await serve(echo_app(Echo()), cert.server_context(tmp_path))
    try:
        web = await start_web("host")
        url = f"https://127.0.0.1:{served.port}/"
        await web.policy.add_target(SYSTEM_ACTOR, "tls", kind="http", url=url, accounts=["svc"])
        await web.node.services.vault.set_credential(
            SYSTEM_ACTOR,
            "tls",
            "svc",
            "http_header",
            Secret("tls-canary-value"),
            public={"header": "X-K"},
        )
        await web.grant("alice", "tls")
        browser = await web.browser("alice")
        landed = await web.open(browser, "tls")
        assert landed.status == 502
        assert "certificate did not verify" in await landed.text()
    finally:
        await served.runner.cleanup()


async def test_a_pinned_certificate_reaches_a_self_signed_console(
    start_web: Starter, tmp_path: Path
) -> None:
    cert = self_signed()
    served = await serve(echo_app(Echo()), cert.server_context(tmp_path))
    try:
        web = await start_web("host")
        url = f"https://127.0.0.1:{served.port}/"
        await web.policy.add_target(
            SYSTEM_ACTOR, "tls", kind="http", url=url, accounts=["svc"],
            tls_fingerprint=cert.fingerprint,
        )  # fmt: skip
        await web.node.services.vault.set_credential(
            SYSTEM_ACTOR,
            "tls",
            "svc",
            "http_header",
            Secret("tls-canary-value"),
            public={"header": "X-K"},
        )
        await web.grant("alice", "tls")
        browser = await web.browser("alice")
        landed = await web.open(browser, "tls")
        assert landed.status == 200
    finally:
        await served.runner.cleanup()
