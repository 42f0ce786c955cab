"""Web targets end to end on a real node: the hand-off, injected credentials, what reaches the
upstream, cookies per target, refusals, sessions in the registry, metrics."""

from __future__ import annotations

import asyncio
import json
import os

from yarl import URL

from gateway.http.assertion import verify
from gateway.http.refusal import CSP
from policy.service import SYSTEM_ACTOR
from tests.gateway.http.conftest import DOMAIN, ECHO_KEY, SECRETS, WebTargets


async def test_opening_a_target_hands_off_and_serves_it_with_the_vaulted_credential(
    web: WebTargets,
) -> None:
    await web.grant("alice", "grafana")
    browser = await web.browser("alice")
    landed = await web.open(browser, "grafana")
    assert landed.status == 200
    assert str(landed.url) == web.base("grafana")
    assert await landed.text() == "basic ok /"
    (session,) = web.sessions("grafana")
    assert (session.user, session.kind, session.account) == ("alice", "http", "svc")


async def test_a_bearer_credential_is_injected_and_the_person_never_sees_it(
    web: WebTargets,
) -> None:
    await web.grant("alice", "api")
    browser = await web.browser("alice")
    landed = await web.open(browser, "api", "/v1/things")
    assert landed.status == 200 and (await landed.json())["path"] == "/v1/things"
    seen = (await landed.text()) + "".join(str(r.headers) for r in (*landed.history, landed))
    assert len(landed.history) == 4  # /open, start, /open?state, handoff
    assert not any(secret in seen for secret in SECRETS)


async def test_what_the_person_sends_as_credentials_or_forwarding_never_reaches_the_app(
    web: WebTargets,
) -> None:
    await web.grant("alice", "echo")
    browser = await web.browser("alice")
    await web.open(browser, "echo")
    async with browser.get(
        web.base("echo") + "who",
        headers={
            "Authorization": "Basic bWFsbG9yeToxMjM=",
            "X-Forwarded-For": "10.9.9.9",
            "X-Lockgate-Assertion": "forged.jwt.value",
            "X-Api-Key": "person-typed-key",
        },
    ) as resp:
        seen = await resp.json()
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert "authorization" not in headers
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers.get("x-lockgate-assertion") != "forged.jwt.value"
    assert headers["x-api-key"] == ECHO_KEY
    assert headers["x-forwarded-host"] == f"echo.gw.test:{web.port}"
    assert not any(k.startswith("lockgate") for k in json.dumps(headers).split('"'))
    cookie = headers.get("cookie", "")
    assert "lockgate" not in cookie


async def test_two_targets_in_one_browser_keep_their_cookies_apart(web: WebTargets) -> None:
    await web.grant("alice", "echo")
    await web.grant("alice", "shop")
    browser = await web.browser("alice")
    await web.open(browser, "echo")
    await web.open(browser, "shop")
    async with browser.get(web.base("echo") + "cookies") as resp:
        assert resp.status == 200
    async with browser.post(
        web.base("shop") + "login", data={"user": "ops", "password": "app-own-password"}
    ) as resp:
        home = await resp.text()
    assert resp.status == 200 and json.loads(home)["home"]
    async with browser.get(web.base("echo") + "who") as resp:
        seen = await resp.json()
    cookie = dict(seen["headers"]).get("Cookie", "")
    assert "app_pref=blue" in cookie and "app_sid" not in cookie
    # one target's sign-in cookie is worthless on another target's origin
    echo_cookies = browser.cookie_jar.filter_cookies(URL(web.base("echo")))
    (name,) = [n for n in echo_cookies if n.startswith("lockgate")]
    thief = await web.browser(None)
    thief.cookie_jar.update_cookies({name: echo_cookies[name].value}, URL(web.base("shop")))
    async with thief.get(web.base("shop") + "home", allow_redirects=False) as resp:
        assert resp.status == 303 and "/open/shop" in resp.headers["Location"]


async def test_a_browser_without_sign_in_is_sent_through_the_handoff(web: WebTargets) -> None:
    stranger = await web.browser(None)
    async with stranger.get(web.base("echo") + "x?y=1", allow_redirects=False) as resp:
        assert resp.status == 303
        assert resp.headers["Location"] == f"{web.gateway}/open/echo?next=%2Fx%3Fy%3D1"
    async with stranger.post(web.base("echo") + "x", data=b"z") as resp:
        assert resp.status == 401
        assert "Open through Lockgate" in await resp.text()
        assert resp.headers["Content-Security-Policy"] == CSP
    async with stranger.get(f"{web.gateway}/open/echo", allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"].startswith("/login?next=")


async def test_no_grant_gets_a_page_that_names_the_target_and_links_the_request_form(
    web: WebTargets,
) -> None:
    browser = await web.browser("alice")
    async with browser.get(f"{web.gateway}/open/vault-ui") as resp:
        text = await resp.text()
    assert resp.status == 403
    assert "no active grant for vault-ui" in text
    assert f'href="{web.gateway}/access?target=vault-ui"' in text


async def test_a_web_session_is_listed_audited_and_counted(web: WebTargets) -> None:
    await web.grant("alice", "echo")
    browser = await web.browser("alice")
    await web.open(browser, "echo")
    (session,) = web.sessions("echo")
    records = await web.node.services.sessions.list(SYSTEM_ACTOR, active_only=True)
    assert [(r.id, r.kind, r.target) for r in records] == [(session.id, "http", "echo")]
    events = (
        await web.node.services.audit.list(SYSTEM_ACTOR)
        if hasattr(web.node.services.audit, "list")
        else None
    )
    assert events is None or any(e.action == "session.start" for e in events)
    metrics = web.node.metrics.registry
    value = metrics.get_sample_value(
        "lockgate_http_requests_total", {"target": "echo", "code": "200"}
    )
    assert value == 1


async def test_websockets_pass_with_the_targets_origin_and_not_with_another(
    web: WebTargets,
) -> None:
    await web.grant("alice", "echo")
    browser = await web.browser("alice")
    await web.open(browser, "echo")
    async with browser.ws_connect(web.base("echo") + "ws", origin=web.origin("echo")) as ws:
        await ws.send_str("hi")
        assert (await ws.receive()).data == "echo:hi"
    for origin in (web.origin("shop"), web.gateway):
        try:
            async with browser.ws_connect(web.base("echo") + "ws", origin=origin):
                raise AssertionError("a WebSocket from another origin was accepted")
        except Exception as exc:  # WSServerHandshakeError
            assert getattr(exc, "status", None) == 403


async def test_ambiguous_framing_to_a_target_is_refused_and_the_connection_closed(
    web: WebTargets,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
    writer.write(
        b"POST / HTTP/1.1\r\nHost: echo.gw.test\r\nTransfer-Encoding: identity, chunked\r\n\r\n"
        b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: echo.gw.test\r\n\r\n"
    )
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert data.startswith(b"HTTP/1.1 400") and data.count(b"HTTP/1.1") == 1
    assert web.echo.seen == []


async def test_the_gateways_own_pages_keep_their_headers_and_targets_get_none(
    web: WebTargets,
) -> None:
    await web.grant("alice", "echo")
    browser = await web.browser("alice")
    await web.open(browser, "echo")
    async with browser.get(web.base("echo") + "who") as resp:
        assert "Content-Security-Policy" not in resp.headers
        assert "X-Frame-Options" not in resp.headers
        assert resp.headers["X-Upstream"] == "echo"
    async with browser.get(f"{web.gateway}/healthz") as resp:
        assert "Content-Security-Policy" in resp.headers


async def test_an_unreachable_target_name_gets_a_clear_page(web: WebTargets) -> None:
    browser = await web.browser("alice")
    async with browser.get(f"{web.gateway}/open/db_01") as resp:
        assert resp.status == 404
        assert "no web target named db_01" in await resp.text()


async def test_each_request_is_in_the_sessions_recording(web: WebTargets) -> None:
    await web.grant("alice", "echo")
    browser = await web.browser("alice")
    await web.open(browser, "echo")
    (session,) = web.sessions("echo")
    async with browser.post(web.base("echo") + "items/42", data=b"x" * 10) as resp:
        assert resp.status == 200
    await web.node.registry.terminate(session.id, "terminated by ada: done")
    (path,) = [p for p in web.node.config.recordings_path.rglob(f"{session.id}*") if p.is_file()]
    data = path.read_bytes()
    assert b'"kind": "http"' in data or b'"kind":"http"' in data
    assert b"/items/42" in data and b"POST" in data


async def test_a_state_change_from_another_targets_page_is_refused(web: WebTargets) -> None:
    await web.grant("alice", "echo")
    browser = await web.browser("alice")
    await web.open(browser, "echo")
    before = len(web.echo.seen)
    sibling = {"Origin": web.origin("shop")}
    async with browser.post(web.base("echo") + "transfer", data=b"x", headers=sibling) as resp:
        assert resp.status == 403
        assert "another site" in await resp.text()
    async with browser.post(
        web.base("echo") + "transfer", data=b"x", headers={"Sec-Fetch-Site": "same-site"}
    ) as resp:
        assert resp.status == 403
    assert len(web.echo.seen) == before
    own = {"Origin": web.origin("echo")}
    async with browser.post(web.base("echo") + "transfer", data=b"x", headers=own) as resp:
        assert resp.status == 200


async def test_the_gateways_paths_on_a_targets_origin_belong_to_the_app(web: WebTargets) -> None:
    await web.grant("alice", "echo")
    browser = await web.browser("alice")
    await web.open(browser, "echo")
    paths = ["/api/v1/openapi.json", "/static/app.css", "/login", "/open/echo", "/metrics"]
    for path in paths:
        async with browser.get(web.base("echo") + path[1:], allow_redirects=False) as resp:
            assert resp.status == 200, path
            assert (await resp.json())["raw_path"] == path
    async with browser.get(web.base("echo") + "__lockgate/else") as resp:
        assert resp.status == 404  # the hand-off's own paths are never proxied
    assert all(s["raw_path"] != "/__lockgate/else" for s in web.echo.seen)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_a_large_download_through_the_node_keeps_its_memory_flat(web: WebTargets) -> None:
    await web.grant("alice", "echo")
    browser = await web.browser("alice")
    await web.open(browser, "echo")
    url = web.base("echo") + "big?size="
    async with browser.get(url + str(16 << 20)) as resp:  # warm the allocator up
        await resp.read()
    size, got, start, peak = 200 << 20, 0, rss(), 0
    async with browser.get(url + str(size)) as resp:
        assert resp.headers["Content-Length"] == str(size)
        async for chunk in resp.content.iter_chunked(1 << 20):
            got += len(chunk)
            peak = max(peak, rss() - start)
    assert got == size
    assert peak < 24 << 20, f"RSS grew by {peak >> 20} MB while streaming"


async def test_the_app_gets_a_signed_assertion_it_can_verify_and_never_a_forged_one(
    web: WebTargets,
) -> None:
    grant = await web.grant("alice", "echo")
    browser = await web.browser("alice")
    await web.open(browser, "echo")
    async with browser.get(
        web.base("echo") + "who", headers={"X-Lockgate-Assertion": "forged.jwt.value"}
    ) as resp:
        headers = {k.lower(): v for k, v in (await resp.json())["headers"]}
    async with browser.get(f"{web.gateway}/.well-known/jwks.json") as resp:
        jwks = await resp.json()
    claims = verify(
        headers["x-lockgate-assertion"],
        jwks,
        audience="echo",
        issuer=f"https://{DOMAIN}",
        now=web.timer.now(),
    )
    (session,) = web.sessions("echo")
    assert (claims["sub"], claims["grant"], claims["sid"]) == ("alice", grant, session.id)
    assert claims["roles"] == ["dev"]
    assert session.expires_at is not None
    assert claims["exp"] <= session.expires_at.timestamp()


async def test_a_target_without_a_usable_credential_is_refused_before_the_upstream(
    web: WebTargets,
) -> None:
    url = f"http://127.0.0.1:{web.echo.port}/"
    await web.policy.add_target(SYSTEM_ACTOR, "tls", kind="http", url=url, accounts=["svc"])
    await web.grant("alice", "tls")
    browser = await web.browser("alice")
    landed = await web.open(browser, "tls")
    assert landed.status == 502
    assert "no usable credential for svc@tls" in await landed.text()
    async with browser.get(web.base("tls") + "again") as resp:
        assert "no usable credential for svc@tls" in await resp.text()
    assert web.echo.seen == [] and web.sessions("tls") == []
    records = await web.node.services.sessions.list(SYSTEM_ACTOR)
    assert len([r for r in records if r.target == "tls"]) == 1  # not one per request
