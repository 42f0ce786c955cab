"""Web targets in a real Chromium: two targets side by side in two tabs on their own origins,
the demo console served with a credential the person never typed, its WebSocket live, and
an admin's terminate or the grant's end cutting page and WebSocket at once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from gateway.demo_web import start_demo_web
from gateway.web.auth import COOKIE
from policy.models import Rule
from policy.service import SYSTEM_ACTOR
from tests.gateway.http.conftest import BEARER_TOKEN, DOMAIN, WEB_RULE, Starter, WebTargets
from tests.gateway.web.test_browser import CHROMIUM, DRIVER, browsers, run, wait
from vault.secret import Secret

__all__ = ["browsers"]  # the fixture, re-exported for this module

DEMO_TOKEN = "demo-console-token-5b1c"
CONSOLE_RULE = Rule(
    name="console",
    roles=frozenset({"dev"}),
    targets=("console",),
    approvals=0,
    require_reason=False,
    channels=frozenset({"http"}),
)


def chromium_for(domain: str) -> WebDriver:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    # Every *.gw.test origin is the node on loopback: one origin per target, as with
    # wildcard DNS.
    options.add_argument(f"--host-resolver-rules=MAP *.{domain} 127.0.0.1, MAP {domain} 127.0.0.1")
    return webdriver.Chrome(service=Service(DRIVER), options=options)


async def add_console(web: WebTargets, url: str) -> Any:
    """The demo console as the target ``console``, its bearer token in the vault."""
    policy, vault = web.node.services.policy, web.node.services.vault
    await policy.add_target(SYSTEM_ACTOR, "console", kind="http", url=url, accounts=["svc"])
    await vault.set_credential(
        SYSTEM_ACTOR, "console", "svc", "http_header", Secret(f"Bearer {DEMO_TOKEN}"),
        public={"header": "Authorization"},
    )  # fmt: skip
    return policy


@pytest.mark.timeout(300)
async def test_two_web_targets_in_two_tabs_and_a_terminate_cuts_the_websocket(
    start_web: Starter, browsers: list[WebDriver]
) -> None:
    runner, url = await start_demo_web(DEMO_TOKEN)
    try:
        web: WebTargets = await start_web("host", rules=(WEB_RULE, CONSOLE_RULE))
        policy = await add_console(web, url)
        for target in ("console", "api"):
            await policy.create_request("alice", target, duration=timedelta(hours=1))
        assert web.node.deps is not None
        cookie, _ = await web.node.deps.browser.create("alice")
        driver = await run(chromium_for, DOMAIN)
        browsers.append(driver)

        def open_both() -> str:
            driver.get(f"{web.gateway}/login")  # the gateway's origin, signed in below
            driver.add_cookie({"name": COOKIE, "value": cookie, "path": "/"})
            driver.get(f"{web.gateway}/")
            opener = "a.open[href^='/open/console']"
            link = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, opener))
            link.click()  # opens a new tab (target=_blank)
            wait(driver, lambda d: len(d.window_handles) == 2)
            console_tab = driver.window_handles[1]
            driver.switch_to.window(console_tab)
            wait(driver, lambda d: d.find_element(By.ID, "socket-state").text == "connected")
            first = driver.find_element(By.ID, "clock").text
            wait(driver, lambda d: d.find_element(By.ID, "clock").text not in ("-", first))
            driver.switch_to.new_window("tab")
            driver.get(f"{web.gateway}/open/api")
            wait(driver, lambda d: '"ok": true' in d.page_source)
            api_url = driver.current_url
            driver.switch_to.window(console_tab)
            return api_url

        api_url = await run(open_both)
        assert api_url.startswith(f"http://api.{DOMAIN}:")
        assert driver.current_url.startswith(f"http://console.{DOMAIN}:")
        page = await run(lambda: driver.page_source)
        assert DEMO_TOKEN not in page and BEARER_TOKEN not in page
        (session,) = web.sessions("console")
        assert len(web.sessions("api")) == 1  # two targets, two sessions, side by side

        await web.node.services.sessions.terminate(SYSTEM_ACTOR, session.id, "browser test")

        def cut() -> str:
            wait(driver, lambda d: "closed" in d.find_element(By.ID, "socket-state").text, 10)
            driver.refresh()
            wait(driver, lambda d: "terminated" in d.page_source)
            return str(driver.page_source)

        refusal = await run(cut)
        assert "browser test" in refusal
        assert "Demo console" not in refusal
    finally:
        await runner.cleanup()


GUARDED_CONSOLE = Rule(
    name="console-guarded",
    roles=frozenset({"dev"}),
    targets=("console",),
    approvals=1,
    approver_roles=frozenset({"admin"}),
    require_reason=False,
    channels=frozenset({"http"}),
)


@pytest.mark.timeout(300)
async def test_at_the_grants_end_the_page_and_its_websocket_are_cut(
    start_web: Starter, browsers: list[WebDriver]
) -> None:
    # An approval rule, so that reloading does not grant anew through the hand-off (a
    # zero-approval rule would, as connecting over SSH does).
    runner, url = await start_demo_web(DEMO_TOKEN)
    try:
        web: WebTargets = await start_web("host", rules=(WEB_RULE, GUARDED_CONSOLE))
        policy = await add_console(web, url)
        request = await policy.create_request("alice", "console", duration=timedelta(minutes=30))
        await policy.approve("ada", request.id)
        assert web.node.deps is not None
        cookie, _ = await web.node.deps.browser.create("alice")
        driver = await run(chromium_for, DOMAIN)
        browsers.append(driver)

        def open_console() -> None:
            driver.get(f"{web.gateway}/login")
            driver.add_cookie({"name": COOKIE, "value": cookie, "path": "/"})
            driver.get(f"{web.gateway}/open/console")
            wait(driver, lambda d: d.find_element(By.ID, "socket-state").text == "connected")

        await run(open_console)
        (session,) = web.sessions("console")
        await web.timer.advance(timedelta(minutes=31))

        def cut() -> tuple[str, str]:
            state = driver.find_element(By.ID, "socket-state")
            wait(driver, lambda d: "closed (1008)" in state.text, 10)
            driver.refresh()
            wait(driver, lambda d: "Demo console" not in d.page_source)
            return str(driver.page_source), str(driver.current_url)

        page, where = await run(cut)
        assert "You have no active grant for console" in page
        assert "Demo console" not in page and DEMO_TOKEN not in page
        assert where == f"{web.gateway}/open/console"  # back at the gateway's hand-off
        ended = await web.node.services.sessions.get(SYSTEM_ACTOR, session.id)
        assert ended.end_reason == "grant expired"
        assert web.sessions("console") == []
    finally:
        await runner.cleanup()
