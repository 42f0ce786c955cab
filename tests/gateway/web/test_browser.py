"""The web UI in real headless Chromium (Debian's ``chromium`` and ``chromium-driver``) against
a real node: sign in, request, approve as another person, watch the live session, terminate it
with the button, then replay, seek and search the recording as an auditor.

Selenium calls block, and the server runs in this test's event loop, so every browser step
runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from policy.service import SYSTEM_ACTOR
from tests.eventually import eventually
from tests.gateway.web.conftest import Web
from tests.target import TARGET_USER

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (shutil.which("chromium") and shutil.which("chromedriver")):  # pragma: no cover
    pytest.fail("the browser tests need Debian's chromium and chromium-driver", pytrace=False)

T = TypeVar("T")
XSS = "<img src=x onerror=document.title='pwned'>"


def new_browser() -> WebDriver:
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1000")
    return webdriver.Chrome(service=Service(DRIVER), options=options)


async def run(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


def wait(driver: WebDriver, condition: Callable[[WebDriver], Any], timeout: float = 30) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def sign_in(
    driver: WebDriver, base: str, user: str, password: str, code: str, page: str = "/"
) -> None:
    driver.get(base + page)
    wait(driver, ec.presence_of_element_located((By.NAME, "user")))
    driver.find_element(By.NAME, "user").send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.NAME, "code").send_keys(code)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait(driver, ec.presence_of_element_located((By.CSS_SELECTOR, "nav .who")))


def screen_text(driver: WebDriver) -> str:
    return str(driver.find_element(By.ID, "screen").get_property("textContent"))


@pytest.fixture
async def browsers() -> AsyncIterator[list[WebDriver]]:
    opened: list[WebDriver] = []
    yield opened
    for driver in opened:
        await run(driver.quit)


@pytest.mark.timeout(600)
async def test_request_approve_watch_terminate_replay(web: Web, browsers: list[WebDriver]) -> None:
    alice = await run(new_browser)
    ada = await run(new_browser)
    audrey = await run(new_browser)
    browsers.extend([alice, ada, audrey])

    # alice asks for access in the browser.
    def request_access() -> None:
        sign_in(alice, web.base, "alice", web.passwords["requester"], web.totp_code("requester"))
        form = alice.find_element(By.ID, "request-form")
        Select(form.find_element(By.NAME, "target")).select_by_value(f"db01|{TARGET_USER}")
        form.find_element(By.NAME, "duration").send_keys("30m")
        form.find_element(By.NAME, "reason").send_keys("INC-77 browser flow")
        form.find_element(By.CSS_SELECTOR, "button").click()
        wait(alice, lambda d: "INC-77 browser flow" in d.page_source)

    await run(request_access)
    pending = await web.policy.list_requests("alice", pending_only=True, mine_only=True)
    assert len(pending) == 1 and pending[0].reason == "INC-77 browser flow"

    # ada approves it from the queue.
    def approve() -> None:
        sign_in(ada, web.base, "ada", web.passwords["admin"], web.totp_code("admin"), "/approvals")
        row = ada.find_element(By.XPATH, f"//tr[td[text()='{pending[0].id}']]")
        form = row.find_element(By.CSS_SELECTOR, "form[data-api$='/approve']")
        form.find_element(By.NAME, "comment").send_keys("go ahead")
        form.find_element(By.CSS_SELECTOR, "button").click()
        wait(ada, lambda d: "No request waits for you." in d.page_source)

    await run(approve)
    request = await web.policy.get_request(SYSTEM_ACTOR, pending[0].id)
    assert request.state == "approved" and request.approvals[0].approver == "ada"

    # alice connects with plain ssh and works in a shell.
    ssh = await asyncio.create_subprocess_exec(
        *web.ssh_argv("requester", f"alice+{TARGET_USER}@db01", "-tt"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert ssh.stdin is not None
    live = await eventually(
        lambda: list(web.node.registry.sessions.values()), what="alice's live session"
    )
    session_id = live[0].id
    await asyncio.sleep(1.0)  # let the remote shell print its prompt
    ssh.stdin.write(b"echo live-marker-$((40+2))\n")
    await ssh.stdin.drain()

    # ada sees the session, opens the live view and watches the text appear.
    def watch() -> None:
        ada.get(web.base + "/sessions")
        row = wait(
            ada, ec.presence_of_element_located((By.XPATH, f"//tr[td[text()='{session_id}']]"))
        )
        assert "alice" in row.text
        row.find_element(By.LINK_TEXT, "watch").click()
        wait(ada, lambda d: "live-marker-42" in screen_text(d))

    await run(watch)
    ssh.stdin.write(f"echo second-line; echo '{XSS}'\n".encode())
    await ssh.stdin.drain()
    await run(wait, ada, lambda d: "second-line" in screen_text(d) and XSS in screen_text(d))
    assert await run(lambda: ada.title) != "pwned"
    assert await run(lambda: ada.find_elements(By.CSS_SELECTOR, "#screen img")) == []

    # ... and ends it with the terminate button.
    def terminate() -> None:
        form = ada.find_element(By.CSS_SELECTOR, "form.terminate")
        form.find_element(By.NAME, "reason").send_keys("seen enough")
        form.find_element(By.CSS_SELECTOR, "button").click()

    await run(terminate)
    _, err = await asyncio.wait_for(ssh.communicate(), 30)
    assert ssh.returncode != 0
    assert b"[lockgate] session terminated: terminated by ada: seen enough" in err
    await run(
        wait,
        ada,
        lambda d: (
            d.find_element(By.ID, "live-status").text in ("session ended", "disconnected")
            or "No live session" in d.page_source
        ),
    )

    # audrey replays the recording: it opens at once, seeks, and search jumps to a command.
    deps = web.node.deps
    assert deps is not None

    async def seekable() -> bool:
        try:
            await deps.recordings.keyframe_before(session_id, 0.0)
        except Exception:
            return False
        return True

    await eventually(seekable, interval=0.1, what="the recording indexed for seeking")
    info = await deps.recordings.get(session_id)

    def replay() -> None:
        sign_in(
            audrey,
            web.base,
            "audrey",
            web.passwords["auditor"],
            web.totp_code("auditor"),
            f"/recordings/{session_id}",
        )
        wait(audrey, lambda d: "INC-77 browser flow" in d.find_element(By.ID, "facts").text)
        facts = audrey.find_element(By.ID, "facts").text
        assert "ada" in facts and "alice" in facts
        assert audrey.find_elements(By.CSS_SELECTOR, "#markers .marker.kill")
        # Seek to the end: the last screen shows the session's last output, as text.
        audrey.execute_script(
            "const s = document.getElementById('seek'); s.value = s.max;"
            "s.dispatchEvent(new Event('input'));"
        )
        wait(audrey, lambda d: "second-line" in screen_text(d))
        assert XSS in screen_text(audrey) and not audrey.find_elements(
            By.CSS_SELECTOR, "#screen img"
        )
        # Back to the middle, then search and jump.
        audrey.execute_script(
            "const s = document.getElementById('seek'); s.value = String(Number(s.max) / 2);"
            "s.dispatchEvent(new Event('input'));"
        )
        audrey.find_element(By.ID, "search-text").send_keys("live-marker-42")
        audrey.find_element(By.CSS_SELECTOR, "#search button").click()
        hit = wait(audrey, ec.presence_of_element_located((By.CSS_SELECTOR, "#hits li")))
        assert "live-marker-42" in hit.text
        wait(audrey, lambda d: "live-marker-42" in screen_text(d))
        # Play from the start at 16x with idle skipping: the screen moves on by itself.
        Select(audrey.find_element(By.ID, "speed")).select_by_value("16")
        audrey.execute_script(
            "const s = document.getElementById('seek'); s.value = '0';"
            "s.dispatchEvent(new Event('input'));"
        )
        audrey.find_element(By.ID, "play").click()
        wait(audrey, lambda d: "second-line" in screen_text(d))

    await run(replay)
    assert info.sealed
    assert await web.policy.list_requests(SYSTEM_ACTOR)  # the flow left its records


@pytest.mark.timeout(300)
async def test_replay_refused_to_another_requester(web: Web, browsers: list[WebDriver]) -> None:
    mallory = await run(new_browser)
    browsers.append(mallory)

    def attempt() -> tuple[str, str]:
        sign_in(mallory, web.base, "mallory", web.passwords["other"], web.totp_code("other"))
        mallory.get(web.base + "/recordings")
        page = mallory.page_source
        mallory.get(web.base + "/api/v1/recordings/se-0000000000000000/cast")
        return page, mallory.page_source

    recordings_page, cast = await run(attempt)
    assert "auditors" in recordings_page
    assert "not-found" in cast
