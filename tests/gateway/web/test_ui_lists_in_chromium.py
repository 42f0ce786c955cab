"""The web UI's listings and confirmations in real headless Chromium against a real node with
real SSH sessions: recordings filtered and paged with what each session was, the audit log
filtered and paged, ended sessions linking to their replays, a replay opened while its
recording is still being indexed, confirmations after approve and terminate, a styled 403
page, the favicon, and no page wider than a phone's screen."""

from __future__ import annotations

import asyncio

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.eventually import eventually
from tests.gateway.web.conftest import Web
from tests.gateway.web.test_browser import browsers, new_browser, run, sign_in, wait  # noqa: F401
from tests.target import TARGET_USER

LOGIN = f"alice+{TARGET_USER}@db01"


def rows(driver: WebDriver) -> list[str]:
    """The table rows' text (read in one step, like ``flash``)."""
    return list(
        driver.execute_script(
            "return Array.from(document.querySelectorAll('table tbody tr'), r => r.innerText);"
        )
    )


def flash(driver: WebDriver) -> str:
    """The confirmation shown (read in one step: the page may be reloading meanwhile)."""
    return str(
        driver.execute_script(
            "const box = document.getElementById('flash');"
            "return box && !box.hidden ? box.textContent : '';"
        )
    )


@pytest.mark.timeout(600)
async def test_listings_confirmations_and_pages(web: Web, browsers: list[WebDriver]) -> None:  # noqa: F811
    await web.grant("requester")
    await web.grant("other")
    for role, login, command in (
        ("requester", LOGIN, "echo first-of-alice"),
        ("requester", LOGIN, "echo second-of-alice"),
        ("other", f"mallory+{TARGET_USER}@db01", "echo only-of-mallory"),
    ):
        proc = await asyncio.create_subprocess_exec(
            *web.ssh_argv(role, login, command),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err
    sessions = await web.node.services.sessions.list("audrey")
    for s in sessions:
        await web.indexed_recording(s.id, "auditor")

    audrey = await run(new_browser)
    browsers.append(audrey)

    def recordings() -> None:
        sign_in(audrey, web.base, "audrey", web.passwords["auditor"], web.totp_code("auditor"))
        audrey.get(web.base + "/recordings?limit=2")
        first = rows(audrey)
        assert len(first) == 2 and "echo only-of-mallory" in first[0]  # newest first, what ran
        audrey.find_element(By.LINK_TEXT, "Older recordings").click()
        wait(audrey, lambda d: "first-of-alice" in " ".join(rows(d)))
        assert len(rows(audrey)) == 1
        form = audrey.find_element(By.ID, "recording-filters")
        form.find_element(By.NAME, "user").send_keys("mallory")
        form.find_element(By.CSS_SELECTOR, "button").click()
        wait(audrey, lambda d: "user=mallory" in d.current_url)
        assert [("mallory" in r) for r in rows(audrey)] == [True]
        audrey.get(web.base + "/recordings?kind=http")
        assert "No recording matches." in audrey.page_source
        audrey.get(web.base + "/recordings?since=2000-01-01&until=2000-01-02")
        assert "No recording matches." in audrey.page_source
        audrey.get(web.base + "/recordings?since=yesterday")
        assert "from must read YYYY-MM-DD; ignored" in audrey.page_source

    await run(recordings)

    def audit() -> None:
        audrey.get(web.base + "/audit?action=session.start&limit=2")
        first = rows(audrey)
        assert len(first) == 2 and all("session.start" in r for r in first)
        assert " UTC" in first[0] and "+00:00" not in first[0]
        audrey.find_element(By.LINK_TEXT, "Older events").click()
        wait(audrey, lambda d: "before=" in d.current_url)
        assert [("session.start" in r) for r in rows(audrey)] == [True]
        audrey.get(web.base + "/audit?actor=bob")
        assert rows(audrey) and all("bob" in r.split() for r in rows(audrey))

    await run(audit)

    # Ended sessions link to their replays; a replay opened before its recording is indexed
    # says so, and opens by itself once it is.
    deps = web.node.deps
    assert deps is not None
    workers = deps.recordings._workers
    held = 0
    while not workers.locked():
        await workers.acquire()
        held += 1
    ssh = await asyncio.create_subprocess_exec(
        *web.ssh_argv("requester", LOGIN, "-tt"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    live = await eventually(lambda: list(web.node.registry.sessions.values()), what="a session")
    sid = live[0].id
    ada = await run(new_browser)
    browsers.append(ada)

    def terminate() -> None:
        sign_in(ada, web.base, "ada", web.passwords["admin"], web.totp_code("admin"), "/sessions")
        row = wait(ada, lambda d: d.find_element(By.XPATH, f"//tr[td[text()='{sid}']]"))
        form = row.find_element(By.CSS_SELECTOR, "form.terminate")
        form.find_element(By.NAME, "reason").send_keys("confirm test")
        form.find_element(By.CSS_SELECTOR, "button").click()
        wait(ada, lambda d: f"Session {sid} terminated." in flash(d))

    await run(terminate)
    await asyncio.wait_for(ssh.communicate(), 30)

    def being_indexed() -> None:
        ada.get(web.base + "/sessions")
        ended = ada.find_element(By.XPATH, f"//tr[td[text()='{sid}']]")
        ended.find_element(By.LINK_TEXT, "replay").click()
        wait(ada, lambda d: "being indexed" in d.find_element(By.ID, "screen").text)

    await run(being_indexed)
    for _ in range(held):
        workers.release()
    await run(
        wait, ada, lambda d: d.find_element(By.ID, "viewer").get_attribute("data-state") == "ready"
    )
    assert "confirm test" in await run(lambda: ada.find_element(By.ID, "facts").text)

    # A confirmation after an approval.
    request = await web.policy.create_request(
        "mallory", "db01", account=TARGET_USER, reason="INC-3 confirm", duration=None
    )

    def approve() -> None:
        ada.get(web.base + "/approvals")
        row = ada.find_element(By.XPATH, f"//tr[td[text()='{request.id}']]")
        row.find_element(By.CSS_SELECTOR, "form[data-api$='/approve'] button").click()
        wait(ada, lambda d: f"Request {request.id} of mallory: approval recorded" in flash(d))

    await run(approve)

    # A requester on an auditor's page gets a page with the navigation, not bare text.
    alice = await run(new_browser)
    browsers.append(alice)

    def refused() -> None:
        sign_in(alice, web.base, "alice", web.passwords["requester"], web.totp_code("requester"))
        alice.get(web.base + "/audit")
        assert "This page is for auditors and admins." in alice.page_source
        assert alice.find_elements(By.CSS_SELECTOR, "nav a[href='/sessions']")
        alice.get(web.base + "/")
        connect = alice.find_element(By.CSS_SELECTOR, "code.connect").text
        assert connect.startswith(f"ssh -p {web.node.ssh_port} alice+{TARGET_USER}@db01@")

    await run(refused)
    status, _, headers = await web.call("GET", "/static/favicon.svg")
    assert status == 200 and "svg" in headers["Content-Type"]

    # No page is wider than a phone's screen.
    def narrow() -> list[str]:
        ada.set_window_size(390, 844)
        wide = []
        for page in ("/", "/approvals", "/sessions", "/recordings", "/audit", f"/recordings/{sid}"):
            ada.get(web.base + page)
            overflow = ada.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            if overflow > 0:
                wide.append(f"{page}: {overflow}px")
        return wide

    assert await run(narrow) == []
