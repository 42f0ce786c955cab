"""The whole story in a real Chromium against a real oidc-provider and a real sshd: alice signs
in with the identity provider, asks for access; bob, an approver because of his IdP group,
approves; alice connects with plain OpenSSH and no key (the SSH device login, approved in her
browser); the IdP removes her from the group and the periodic check ends her session."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from gateway.web.routes import API
from tests.eventually import eventually
from tests.gateway.oidc.conftest import Starter
from tests.gateway.web.test_browser import browsers, new_browser, run, wait
from tests.oidc.idp import account
from tests.target import TARGET_USER, Sshd, register_target

__all__ = ["browsers"]  # the fixture, re-exported for this module

pytestmark = [pytest.mark.timeout(300), pytest.mark.browser]


def device_ssh(port: int, login: str, *command: str) -> list[str]:
    """OpenSSH with keyboard-interactive only: no key, no password. (Its default log level
    shows the link: keyboard-interactive instructions are logged at INFO.)"""
    return [
        "ssh",
        "-p",
        str(port),
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "PreferredAuthentications=keyboard-interactive",
        "-o",
        "PubkeyAuthentication=no",
        f"{login}@127.0.0.1",
        *command,
    ]


def idp_sign_in(driver: WebDriver, base: str, login: str) -> None:
    driver.get(f"{base}/login")
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "a.provider")).click()
    wait(driver, lambda d: d.find_element(By.NAME, "login")).send_keys(login)
    driver.find_element(By.NAME, "password").send_keys("any")
    driver.find_element(By.CSS_SELECTOR, "button.login-submit").click()
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "nav .who").text == login)


async def test_idp_sign_in_request_approve_ssh_without_a_key_then_the_idp_removes_her(
    start_corp: Starter, sshd: Sshd, browsers: list[WebDriver]
) -> None:
    corp = await start_corp()
    services = corp.node.services
    await register_target(services, sshd)
    driver = await run(new_browser)
    browsers.append(driver)

    def request_access() -> None:
        idp_sign_in(driver, corp.base, "alice")
        form = driver.find_element(By.ID, "request-form")
        Select(form.find_element(By.NAME, "target")).select_by_value(f"db01|{TARGET_USER}")
        form.find_element(By.NAME, "duration").send_keys("30m")
        form.find_element(By.NAME, "reason").send_keys("INC-9 via the IdP")
        form.find_element(By.CSS_SELECTOR, "button").click()
        wait(driver, lambda d: "INC-9 via the IdP" in d.page_source)

    await run(request_access)
    assert (await services.policy.get_user("alice")).roles == {"dev"}
    (pending,) = await services.policy.list_requests("alice", pending_only=True)

    # bob's approver role comes from his IdP group
    bob = corp.agent()
    assert (await corp.sign_in(bob, "bob"))[0] == 200
    async with bob.http.post(
        f"{corp.base}{API}/requests/{pending.id}/approve",
        json={"comment": "ok"},
        headers={"X-CSRF-Token": await corp.csrf(bob), "Origin": corp.base},
    ) as response:
        assert response.status == 200, await response.text()

    # alice: plain ssh, no key; the gateway shows a link, her browser approves it
    ssh = await asyncio.create_subprocess_exec(
        *device_ssh(corp.node.ssh_port, f"alice+{TARGET_USER}@db01", "echo ready; sleep 120"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert ssh.stderr is not None and ssh.stdout is not None
        shown = b""
        while b"/ssh/" not in shown:
            shown += await asyncio.wait_for(ssh.stderr.readline(), 30)
        link = re.search(rb"(http://\S+/ssh/[A-Z]{4}-[A-Z]{4})", shown)
        assert link is not None, shown

        def approve() -> str:
            driver.get(link.group(1).decode())
            wait(driver, lambda d: d.find_element(By.ID, "approve")).click()
            return str(wait(driver, lambda d: d.find_element(By.ID, "device-result")).text)

        assert "Approved" in await run(approve)
        assert await asyncio.wait_for(ssh.stdout.readline(), 30) == b"ready\n"
        (session,) = await services.sessions.list("alice", active_only=True)

        # the IdP drops alice from sre-db; the next periodic check ends her session
        await corp.idp.set_account("alice", account("alice", ["staff"]))
        await corp.timer.advance(corp.provider.check_interval)
        err = (await asyncio.wait_for(ssh.stderr.read(), 30)).decode()
        assert await asyncio.wait_for(ssh.wait(), 30) != 0
    finally:
        if ssh.returncode is None:
            ssh.kill()
            await ssh.wait()
    assert "session terminated: grant revoked by lockgate: identity provider corp" in err
    assert "no longer grants dev" in err
    assert (await services.policy.get_user("alice")).roles == frozenset()
    (revoke,) = await corp.audit("grant.revoke")
    assert revoke.details["reason"] == "identity provider corp no longer grants dev"

    async def ended() -> bool:
        done = await services.sessions.get("alice", session.id)
        return done.ended_at is not None

    await eventually(ended, what="the session recorded as ended")
    # the device login is audited with the SSH client's address
    (device,) = await corp.audit("auth.device.approve")
    assert device.actor == "alice" and device.details["ssh_client"] == "127.0.0.1"
    assert timedelta(0) <= corp.timer.now() - revoke.at <= timedelta(seconds=1)
