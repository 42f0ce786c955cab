"""The hand-off from the gateway's sign-in to a target's origin: state-bound, single-use,
short-lived; login CSRF and session fixation fail, and each failed link is audited."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import aiohttp

from gateway.http.handoff import CODE_TTL, cookie_names, safe_next
from gateway.http.routing import Route
from tests.gateway.http.conftest import WebTargets


async def follow_until_code(web: WebTargets, browser: aiohttp.ClientSession, target: str) -> str:
    """Run the hand-off in ``browser`` up to the redirect that carries the code; that URL."""
    url = f"{web.gateway}/open/{target}"
    for _ in range(5):
        async with browser.get(url, allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()
            url = resp.headers["Location"]
            if not url.startswith("http"):
                url = web.gateway + url
        if "/__lockgate/handoff?" in url:
            return url
    raise AssertionError("no hand-off code was issued")


async def refused(web: WebTargets) -> list[tuple[str, str, str]]:
    """The audited hand-off refusals: (actor, target, reason)."""
    return [
        (e.actor, e.subject, e.details["reason"])
        for e in await web.node.services.audit.events()
        if e.action == "handoff.refused"
    ]


async def test_an_attackers_code_opened_in_a_victims_browser_fails(web: WebTargets) -> None:
    await web.grant("mallory", "echo")
    await web.grant("alice", "echo")
    attacker = await web.browser("mallory")
    victim = await web.browser("alice")
    link = await follow_until_code(web, attacker, "echo")
    async with victim.get(link, allow_redirects=False) as resp:
        assert resp.status == 403
        assert "another browser" in await resp.text()
        assert not any(c.key.startswith("lockgate_target") for c in victim.cookie_jar if c.value), (
            "the victim's browser must not be signed in as the attacker"
        )
    assert web.sessions("echo") == []
    assert await refused(web) == [("mallory", "echo", "sign-in link opened in another browser")]


async def test_a_victim_with_its_own_state_cookie_still_cannot_redeem_anothers_code(
    web: WebTargets,
) -> None:
    await web.grant("mallory", "echo")
    await web.grant("alice", "echo")
    attacker = await web.browser("mallory")
    victim = await web.browser("alice")
    await follow_until_code(web, victim, "echo")  # the victim's browser now holds a state
    link = await follow_until_code(web, attacker, "echo")
    async with victim.get(link, allow_redirects=False) as resp:
        assert resp.status == 403


async def test_a_code_works_once_in_the_browser_that_asked_for_it(web: WebTargets) -> None:
    await web.grant("alice", "echo")
    browser = await web.browser("alice")
    link = await follow_until_code(web, browser, "echo")
    async with browser.get(link, allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/"
        cookies = resp.headers.getall("Set-Cookie")
    (session_cookie,) = [c for c in cookies if c.startswith("lockgate_target=")]
    assert "HttpOnly" in session_cookie and "SameSite=Lax" in session_cookie
    assert "Domain" not in session_cookie and "Path=/" in session_cookie
    max_age = int(session_cookie.split("Max-Age=")[1].split(";")[0])
    assert 0 < max_age <= 3600, "the cookie lives no longer than the grant"
    again = await web.browser("alice")
    async with again.get(link, allow_redirects=False) as resp:
        assert resp.status == 403  # used up (and bound to the first browser's state)
    async with browser.get(link, allow_redirects=False) as resp:
        assert resp.status == 403
    assert await refused(web) == [("?", "echo", "unknown or already used sign-in link")] * 2


async def test_a_code_expires_within_a_minute(web: WebTargets) -> None:
    await web.grant("alice", "echo")
    browser = await web.browser("alice")
    link = await follow_until_code(web, browser, "echo")
    await web.timer.advance(CODE_TTL + timedelta(seconds=1))
    async with browser.get(link, allow_redirects=False) as resp:
        assert resp.status == 403
    assert await refused(web) == [("alice", "echo", "expired sign-in link")]


async def test_a_code_for_one_target_is_refused_on_another(web: WebTargets) -> None:
    await web.grant("alice", "echo")
    await web.grant("alice", "api")
    browser = await web.browser("alice")
    link = await follow_until_code(web, browser, "echo")
    code = parse_qs(urlsplit(link).query)["code"][0]
    async with browser.get(
        web.base("api") + f"__lockgate/handoff?code={code}", allow_redirects=False
    ) as resp:
        assert resp.status == 403
    assert await refused(web) == [("alice", "api", "sign-in link for another target")]


async def test_only_the_state_hash_travels_through_the_gateway(web: WebTargets) -> None:
    await web.grant("alice", "echo")
    browser = await web.browser("alice")
    async with browser.get(f"{web.gateway}/open/echo", allow_redirects=False) as resp:
        start = resp.headers["Location"]
    async with browser.get(start, allow_redirects=False) as resp:
        back = resp.headers["Location"]
        state = resp.cookies["lockgate_state"].value
    assert state not in back
    assert parse_qs(urlsplit(back).query)["state"][0] != state


async def test_the_landing_page_is_the_path_the_person_asked_for(web: WebTargets) -> None:
    await web.grant("alice", "echo")
    browser = await web.browser("alice")
    landed = await web.open(browser, "echo", "/d/dash%20one?orgId=1")
    assert str(landed.url) == web.base("echo") + "d/dash%20one?orgId=1"
    assert (await landed.json())["raw_path"] == "/d/dash%20one?orgId=1"


def test_only_paths_on_the_target_are_landing_pages() -> None:
    assert safe_next("/x?y=1") == "/x?y=1"
    for bad in ("https://evil.example/", "//evil.example/", "/\\evil", "x", "", None, "/a\nb"):
        assert safe_next(bad) == "/"


def test_cookies_on_tls_take_the_host_prefix_and_path_mode_its_path() -> None:
    host = Route("grafana", "host", "/", "", "")
    assert cookie_names(host, True).session == "__Host-lockgate"
    assert cookie_names(host, True).state == "__Host-lockgate_state"
    assert cookie_names(host, False).session == "lockgate_target"
    path = Route("grafana", "path", "/", "", "/t/grafana")
    names = cookie_names(path, True)
    assert (names.session, names.path) == ("lockgate_t_grafana", "/t/grafana/")
    assert names.state_path == "/t/grafana/__lockgate/"
