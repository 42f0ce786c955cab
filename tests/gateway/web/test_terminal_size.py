"""Recordings at the person's real terminal: a real OpenSSH client on a 120x40 pty with
``TERM=screen-256color`` asks for that pty, and the recording, its asciicast export, the live
view, the replay API and the replay viewer in Chromium all use that size; window changes
follow; a ``top`` screen replays as the live view showed it."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import re
import struct
import termios
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.eventually import eventually
from tests.gateway.web.conftest import Web
from tests.gateway.web.test_browser import browsers, new_browser, run, sign_in, wait  # noqa: F401
from tests.target import TARGET_USER


def _set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _take_terminal() -> None:
    """In the child: a session of its own whose controlling terminal is the pty, so the
    kernel tells ssh of window changes (SIGWINCH) as a terminal emulator's resize does."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtyClient:
    """OpenSSH's ``ssh`` on a real pty of a given size; what it prints, read as it comes."""

    def __init__(self, argv: list[str], cols: int, rows: int, term: str) -> None:
        self.argv, self.size, self.term = argv, (cols, rows), term
        self.seen = b""
        self.grew = asyncio.Event()

    async def start(self) -> None:
        self.master, slave = pty.openpty()
        _set_size(slave, *self.size)
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**os.environ, "TERM": self.term},
            preexec_fn=_take_terminal,
        )
        os.close(slave)
        asyncio.get_running_loop().add_reader(self.master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
        self.seen += data
        self.grew.set()

    async def until(self, pattern: bytes, timeout: float = 30, start: int = 0) -> None:
        async def found() -> None:
            while not re.search(pattern, self.seen[start:]):
                self.grew.clear()
                await self.grew.wait()

        try:
            await asyncio.wait_for(found(), timeout)
        except TimeoutError:
            end = self.seen[-600:]
            raise AssertionError(f"{pattern!r} not shown; the end of the screen: {end!r}") from None

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    async def resize(self, cols: int, rows: int) -> None:
        """Resize the pty and wait until ``stty size`` on the target says so: ssh sends the
        window change when it next looks at its SIGWINCH flag, and keys typed at once can
        overtake it, so ``stty size`` is asked again until the new size shows."""
        _set_size(self.master, cols, rows)
        start = len(self.seen)
        for _ in range(10):
            self.type("stty size\n")
            with contextlib.suppress(AssertionError):
                await self.until(rf"{rows} {cols}".encode(), timeout=3, start=start)
                return
        raise AssertionError(f"the target never saw {cols}x{rows}")

    async def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        os.close(self.master)


async def _live_frames_until_end(web: Web, session_id: str, shows: str) -> list[dict[str, Any]]:
    """The live view's frames (as an auditor) until the screen shows ``shows``; then the
    session is terminated and the frames up to the end are collected too."""
    url = f"{web.base.replace('http', 'ws', 1)}/api/v1/sessions/{session_id}/live"
    auditor = {"Authorization": f"Bearer {web.tokens['auditor']}"}
    frames: list[dict[str, Any]] = []
    async with web.http.ws_connect(url, headers=auditor) as ws:
        while not frames or shows not in "\n".join(frames[-1]["lines"]):
            frames.append(await asyncio.wait_for(ws.receive_json(), 30))
        await web.node.registry.terminate(session_id, "terminal size test over")
        while not (frame := await asyncio.wait_for(ws.receive_json(), 30)).get("ended"):
            frames.append(frame)
    return frames


@pytest.mark.timeout(300)
async def test_a_120x40_screen_256color_session_replays_at_its_size(
    web: Web,
    browsers: list[WebDriver],  # noqa: F811
) -> None:
    await web.grant("requester")
    client = PtyClient(
        web.ssh_argv("requester", f"alice+{TARGET_USER}@db01", "-tt"), 120, 40, "screen-256color"
    )
    await client.start()
    try:
        session = await eventually(
            lambda: list(web.node.registry.sessions.values()), what="the live session"
        )
        session_id = session[0].id
        client.type('stty size; echo "term is $TERM"\n')
        await client.until(rb"40 120\r?\n.*term is screen-256color")

        # Window changes reach the target and the recording, then back to 120x40.
        await client.resize(100, 30)
        await client.resize(120, 40)
        client.type("clear\n")

        # A live auditor in Chromium sees the screen at 120x40.
        audrey = await run(new_browser)
        browsers.append(audrey)

        def watch() -> tuple[str, int]:
            sign_in(
                audrey,
                web.base,
                "audrey",
                web.passwords["auditor"],
                web.totp_code("auditor"),
                f"/sessions/{session_id}/live",
            )
            wait(audrey, lambda d: d.find_element(By.ID, "screen").get_attribute("data-size"))
            screen = audrey.find_element(By.ID, "screen")
            rows = len(str(screen.get_property("textContent")).split("\n"))
            return str(screen.get_attribute("data-size")), rows

        assert await run(watch) == ("120x40", 40)

        client.type("top -d 100\n")
        live = await _live_frames_until_end(web, session_id, "PID")
    finally:
        await client.close()

    last_live = live[-1]
    assert (last_live["width"], last_live["height"]) == (120, 40)
    assert sum(1 for line in last_live["lines"] if line.strip()) > 30  # top used all 40 rows

    info = await web.indexed_recording(session_id, "auditor")
    assert (info["width"], info["height"], info["term"]) == (120, 40, "screen-256color")

    # The replay's last screen is the live view's last screen, at 120x40.
    status, end, _ = await web.call(
        "GET", f"/api/v1/recordings/{session_id}/frames?at={info['duration']}", "auditor"
    )
    assert status == 200
    assert (end["width"], end["height"]) == (120, 40)
    assert end["lines"] == last_live["lines"]

    # The asciicast header has the pty request's size and TERM; the window changes follow.
    status, cast, _ = await web.call("GET", f"/api/v1/recordings/{session_id}/cast", "auditor")
    assert status == 200
    header, *events = [json.loads(line) for line in cast.splitlines()]
    assert (header["width"], header["height"], header["env"]) == (
        120,
        40,
        {"TERM": "screen-256color"},
    )
    resizes = [e for e in events if e[1] == "r"]
    assert [e[2] for e in resizes] == ["100x30", "120x40"]
    status, between, _ = await web.call(
        "GET", f"/api/v1/recordings/{session_id}/frames?at={resizes[0][0] + 0.001}", "auditor"
    )
    assert (between["width"], between["height"]) == (100, 30)

    # The replay viewer draws the recording at its size, within the window.
    def replay() -> tuple[str, int, bool]:
        audrey.get(f"{web.base}/recordings/{session_id}?t={info['duration']}")
        wait(audrey, lambda d: "PID" in str(d.find_element(By.ID, "screen").text))
        screen = audrey.find_element(By.ID, "screen")
        rows = len(str(screen.get_property("textContent")).split("\n"))
        fits = bool(
            audrey.execute_script(
                "const r = document.getElementById('screen').getBoundingClientRect();"
                "return r.right <= document.documentElement.clientWidth;"
            )
        )
        return str(screen.get_attribute("data-size")), rows, fits

    assert await run(replay) == ("120x40", 40, True)
