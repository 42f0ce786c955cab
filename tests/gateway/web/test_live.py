"""The live view's WebSocket: who may open it, from where, and what it shows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from tests.eventually import eventually
from tests.gateway.web.conftest import Web
from tests.nodes import start_test_node
from tests.target import TARGET_USER


async def _typing(web: Web) -> tuple[asyncio.subprocess.Process, str]:
    """A requester's pty session on db01 that has typed ``echo before-42``."""
    await web.grant("requester")
    ssh = await asyncio.create_subprocess_exec(
        *web.ssh_argv("requester", f"alice+{TARGET_USER}@db01", "-tt"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert ssh.stdin is not None
    await eventually(lambda: web.node.registry.sessions, what="the live session")
    ssh.stdin.write(b"echo before-$((6*7))\n")
    await ssh.stdin.drain()
    return ssh, next(iter(web.node.registry.sessions))


@pytest.mark.timeout(300)
async def test_live_view_roles_origin_and_frames(web: Web) -> None:
    ssh, session_id = await _typing(web)
    url = f"{web.base.replace('http', 'ws', 1)}/api/v1/sessions/{session_id}/live"

    for role, status in (("anonymous", 401), ("requester", 403), ("approver", 403)):
        headers = {} if role == "anonymous" else {"Authorization": f"Bearer {web.tokens[role]}"}
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await web.http.ws_connect(url, headers=headers)
        assert refused.value.status == status
    auditor = {"Authorization": f"Bearer {web.tokens['auditor']}"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await web.http.ws_connect(url, headers={**auditor, "Origin": "http://evil.example"})
    assert refused.value.status == 403

    async with web.http.ws_connect(url, headers=auditor) as ws:
        seen = ""
        while "before-42" not in seen:  # output from before the viewer joined
            seen = "\n".join((await asyncio.wait_for(ws.receive_json(), 30))["lines"])
        ssh.stdin.write(b"echo after-$((6*7))\n")
        await ssh.stdin.drain()
        while "after-42" not in seen:
            seen = "\n".join((await asyncio.wait_for(ws.receive_json(), 30))["lines"])
        await web.node.registry.terminate(session_id, "live test over")
        ended = False
        while not ended:
            frame = await asyncio.wait_for(ws.receive_json(), 30)
            ended = frame.get("ended", False)
    await asyncio.wait_for(ssh.communicate(), 30)
    status, body, _ = await web.call("GET", f"/api/v1/sessions/{session_id}/live", "auditor")
    assert status == 409 and "ended" in body["detail"]
    events = [e for e in await web.node.services.audit.events() if e.action == "session.watch"]
    assert [(e.actor, e.subject) for e in events] == [("audrey", session_id)]


async def _frames_until(ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
    seen = ""
    while text not in seen:
        seen = "\n".join((await asyncio.wait_for(ws.receive_json(), 30))["lines"])


@pytest.mark.timeout(300)
async def test_the_live_view_follows_a_session_that_another_node_holds(
    web: Web, db_url: str, tmp_path: Path
) -> None:
    """Behind a load balancer (or with workers) the auditor's WebSocket lands on any node:
    that node follows the recording in the directory the nodes share."""
    (tmp_path / "watcher").mkdir()
    watcher = await start_test_node(
        db_url, tmp_path / "watcher", name="watcher", peer=web.node,
        recordings_path=web.node.config.recordings_path,
    )  # fmt: skip
    try:
        ssh, session_id = await _typing(web)
        assert watcher.registry.get(session_id) is None
        url = f"ws://127.0.0.1:{watcher.http_port}/api/v1/sessions/{session_id}/live"
        auditor = {"Authorization": f"Bearer {web.tokens['auditor']}"}
        async with web.http.ws_connect(url, headers=auditor) as ws:
            await _frames_until(ws, "before-42")
            ssh.stdin.write(b"echo after-$((6*7))\n")
            await ssh.stdin.drain()
            await _frames_until(ws, "after-42")
            await web.node.registry.terminate(session_id, "live test over")
            frame: dict[str, object] = {}
            while not frame.get("ended"):
                frame = await asyncio.wait_for(ws.receive_json(), 30)
        await asyncio.wait_for(ssh.communicate(), 30)
        events = [e for e in await web.node.services.audit.events() if e.action == "session.watch"]
        assert [(e.actor, e.subject) for e in events] == [("audrey", session_id)]
    finally:
        await watcher.stop("test finished")


async def test_a_node_that_cannot_read_the_holders_recording_says_so(
    web: Web, db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "apart").mkdir()
    apart = await start_test_node(
        db_url, tmp_path / "apart", name="apart", peer=web.node,
        recordings_path=tmp_path / "apart" / "recordings",
    )  # fmt: skip
    try:
        await web.grant("requester")
        ssh = await asyncio.create_subprocess_exec(
            *web.ssh_argv("requester", f"alice+{TARGET_USER}@db01", "sleep 60"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await eventually(lambda: web.node.registry.sessions, what="the live session")
        session_id = next(iter(web.node.registry.sessions))
        url = f"ws://127.0.0.1:{apart.http_port}/api/v1/sessions/{session_id}/live"
        auditor = {"Authorization": f"Bearer {web.tokens['auditor']}"}
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await web.http.ws_connect(url, headers=auditor)
        assert refused.value.status == 409
        ssh.kill()
        await ssh.wait()
    finally:
        await apart.stop("test finished")
