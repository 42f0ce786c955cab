"""The path-prefix fallback (no ``server.web_domain``): targets at /t/<target>/ on the
gateway's own origin, with redirects and cookies kept under the prefix."""

from __future__ import annotations

from yarl import URL

from tests.gateway.http.conftest import ECHO_KEY, WebTargets


async def test_a_target_url_opened_directly_goes_through_the_handoff_and_lands(
    path_web: WebTargets,
) -> None:
    web = path_web
    await web.grant("alice", "echo")
    browser = await web.browser("alice")
    async with browser.get(web.base("echo")) as resp:
        assert resp.status == 200
        assert str(resp.url) == web.base("echo")
        seen = await resp.json()
    assert seen["raw_path"] == "/"
    headers = dict(seen["headers"])
    assert headers["X-Api-Key"] == ECHO_KEY
    assert headers["X-Forwarded-Prefix"] == "/t/echo"
    assert "lockgate" not in headers.get("Cookie", ""), "the gateway's cookies stay with it"


async def test_the_prefix_without_its_slash_redirects_to_it(path_web: WebTargets) -> None:
    browser = await path_web.browser("alice")
    url = f"http://127.0.0.1:{path_web.port}/t/echo?x=1"
    async with browser.get(url, allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/t/echo/?x=1"


async def test_redirects_and_cookies_stay_under_the_prefix(path_web: WebTargets) -> None:
    web = path_web
    await web.grant("alice", "echo")
    browser = await web.browser("alice")
    await web.open(browser, "echo")
    async with browser.get(web.base("echo") + "redirect", allow_redirects=False) as resp:
        assert resp.headers["Location"] == web.base("echo") + "landed?from=redirect"
    async with browser.get(web.base("echo") + "cookies") as resp:
        assert resp.headers.getall("Set-Cookie") == ["app_pref=blue; Path=/t/echo/"]
    jar = {c.key: c for c in browser.cookie_jar}
    assert jar["lockgate_t_echo"]["path"] == "/t/echo/"


async def test_two_targets_on_one_origin_keep_their_sign_ins_apart(path_web: WebTargets) -> None:
    web = path_web
    await web.grant("alice", "echo")
    await web.grant("alice", "api")
    browser = await web.browser("alice")
    await web.open(browser, "echo")
    await web.open(browser, "api")
    sent_to_api = browser.cookie_jar.filter_cookies(URL(web.base("api")))
    assert "lockgate_t_api" in sent_to_api and "lockgate_t_echo" not in sent_to_api
    async with browser.get(web.base("api") + "v1") as resp:
        assert (await resp.json())["path"] == "/v1"


async def test_names_that_are_no_dns_label_work_under_the_prefix(path_web: WebTargets) -> None:
    web = path_web
    await web.grant("alice", "db_01")
    browser = await web.browser("alice")
    landed = await web.open(browser, "db_01")
    assert landed.status == 200 and str(landed.url) == web.base("db_01")


async def test_the_gateways_own_pages_are_unchanged(path_web: WebTargets) -> None:
    browser = await path_web.browser(None)
    async with browser.get(f"http://127.0.0.1:{path_web.port}/healthz") as resp:
        assert resp.status == 200 and "Content-Security-Policy" in resp.headers
