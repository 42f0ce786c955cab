"""The asciicast export of a session through the gateway plays to its end in asciinema's web
player (the npm package ``asciinema-player``, fetched with ``npm pack``; nothing of it is kept
in this repository) in headless Chromium, and the player's last screen is the one our own
replay shows: two terminal emulators agree on what the person saw."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tarfile
from collections.abc import AsyncIterator

import pytest
from aiohttp import web as aioweb
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from gateway.web.routes import API
from policy.service import SYSTEM_ACTOR
from tests.gateway.web.conftest import Web
from tests.gateway.web.test_browser import browsers, new_browser, run, wait
from tests.target import TARGET_USER

__all__ = ["browsers"]  # the fixture, re-exported for this module

PLAYER = "asciinema-player@3.18.0"
PAGE = """<!doctype html>
<html><head><link rel="stylesheet" href="player.css"></head>
<body><div id="player"></div><script src="player.js"></script><script>
const player = AsciinemaPlayer.create("session.cast", document.getElementById("player"),
  {autoPlay: true, speed: 20, idleTimeLimit: 0.2});
player.addEventListener("ended", () => { document.title = "ended"; });
</script></body></html>
"""


@pytest.fixture(scope="session")
def player_bundle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    npm = shutil.which("npm")
    if npm is None:  # pragma: no cover
        pytest.fail("this test needs npm (Debian package npm) to fetch asciinema-player")
    where = tmp_path_factory.mktemp("npm")
    packed = subprocess.run(
        [npm, "pack", PLAYER, "--pack-destination", str(where)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=where,
    )
    assert packed.returncode == 0, packed.stderr[-2000:]
    with tarfile.open(where / packed.stdout.strip().splitlines()[-1]) as tar:

        def member(name: str) -> bytes:
            f = tar.extractfile(f"package/dist/bundle/{name}")
            assert f is not None
            return f.read()

        return {
            "player.js": member("asciinema-player.min.js"),
            "player.css": member("asciinema-player.css"),
        }


@pytest.fixture
async def player_site(player_bundle: dict[str, bytes]) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """A static site on port 0: the player, a page, and the cast the test puts in ``files``."""
    files: dict[str, str] = {}

    async def serve(request: aioweb.Request) -> aioweb.Response:
        name = request.match_info["name"] or "index.html"
        if name in player_bundle:
            kind = "text/css" if name.endswith(".css") else "text/javascript"
            return aioweb.Response(body=player_bundle[name], content_type=kind)
        if name == "index.html":
            return aioweb.Response(text=PAGE, content_type="text/html")
        if name in files:
            return aioweb.Response(text=files[name], content_type="application/x-asciicast")
        raise aioweb.HTTPNotFound()

    app = aioweb.Application()
    app.router.add_get("/{name:.*}", serve)
    runner = aioweb.AppRunner(app)
    await runner.setup()
    site = aioweb.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/", files
    finally:
        await runner.cleanup()


@pytest.mark.timeout(300)
async def test_export_plays_in_asciinema_web_player(
    web: Web, player_site: tuple[str, dict[str, str]], browsers: list[WebDriver]
) -> None:
    await web.grant("requester")
    script = (
        r"printf '\033[1;31mred alert\033[0m\n'; sleep 0.2; "
        r"for i in $(seq 1 40); do echo line $i; done; sleep 0.3; printf 'the end\n'"
    )
    proc = await asyncio.create_subprocess_exec(
        *web.ssh_argv("requester", f"alice+{TARGET_USER}@db01", "-tt", script),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    deps = web.node.deps
    assert deps is not None
    session = (await deps.sessions.list(SYSTEM_ACTOR))[0]
    info = await web.indexed_recording(session.id)
    status, cast, _ = await web.call("GET", f"{API}/recordings/{session.id}/cast", "requester")
    assert status == 200
    status, window, _ = await web.call(
        "GET", f"{API}/recordings/{session.id}/frames?from=0&to={info['duration'] + 1}", "requester"
    )
    assert status == 200
    ours = [line.rstrip() for line in window["frames"][-1]["lines"]]
    assert "the end" in ours and "line 40" in ours

    ours = trimmed(ours)
    base, files = player_site
    files["session.cast"] = cast
    browser = await run(new_browser)
    browsers.append(browser)

    def screen(driver: WebDriver) -> list[str]:
        rows = driver.find_elements(By.CSS_SELECTOR, "pre.ap-term-text .ap-line")
        return [str(row.get_property("textContent")).rstrip() for row in rows]

    def play() -> list[str]:
        browser.get(base)
        wait(browser, lambda d: d.title == "ended", 120)
        # The player renders on animation frames, which can lag its "ended" event: give the
        # last frame time to reach the page, then compare whatever the page shows.
        with contextlib.suppress(TimeoutException):
            wait(browser, lambda d: trimmed(screen(d)) == ours, 10)
        return screen(browser)

    theirs = await run(play)
    assert len(theirs) == info["height"]
    assert trimmed(theirs) == ours


def trimmed(rows: list[str]) -> list[str]:
    """Rows without the empty ones at the bottom."""
    rows = list(rows)
    while rows and not rows[-1]:
        rows.pop()
    return rows
