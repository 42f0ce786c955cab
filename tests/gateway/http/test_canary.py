"""No vaulted credential of a web target ever shows: not in a page or header the browser
gets, a log line, a recording, the audit log or the metrics."""

from __future__ import annotations

import base64
import json
import logging

import pytest
from prometheus_client import generate_latest

from tests.gateway.http.conftest import SECRETS, WebTargets
from tests.gateway.http.upstreams import BASIC_PASSWORD, BASIC_USER


async def test_no_credential_in_pages_logs_recordings_audit_or_metrics(
    web: WebTargets, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    for target in ("grafana", "api", "echo"):
        await web.grant("alice", target)
    browser = await web.browser("alice")
    # (the echo app itself shows what reached it, credential included: not a page of ours)
    for target, landing in (("grafana", ""), ("api", ""), ("echo", "/cookies")):
        landed = await web.open(browser, target, landing)
        seen.append(await landed.text())
        seen.extend(str(r.headers) for r in (*landed.history, landed))
    async with browser.get(web.base("echo") + "who?token=t0p&x=1") as resp:
        assert resp.status == 200
    for url in (
        web.base("grafana") + "anything",
        web.base("echo") + "redirect",
        web.base("echo") + "cookies",
    ):
        async with browser.get(url, allow_redirects=False) as resp:
            seen.append(await resp.text() + str(resp.headers))
    async with browser.ws_connect(web.base("echo") + "ws", origin=web.origin("echo")) as ws:
        await ws.send_str("hi")
        seen.append(str((await ws.receive()).data))
    for session in web.sessions():
        await web.node.registry.terminate(session.id, "terminated by ada: canary")
    async with browser.get(web.base("echo") + "after") as resp:
        seen.append(await resp.text())
    async with browser.get(f"{web.gateway}/metrics") as resp:
        seen.append(await resp.text())

    recordings = web.node.config.recordings_path
    files = [p.read_bytes() for p in recordings.rglob("*") if p.is_file()]
    assert len(files) >= 3, "each web session has a recording"
    events = await web.node.services.audit.events()
    basic = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
    haystacks = {
        "pages": "\n".join(seen),
        "logs": caplog.text,
        "recordings": b"\n".join(files).decode(errors="replace"),
        "audit": json.dumps([e.details for e in events]),
        "metrics": generate_latest(web.node.metrics.registry).decode(),
    }
    for where, text in haystacks.items():
        for secret in (*SECRETS, basic):
            assert secret not in text, f"a credential leaked into the {where}"

    assert "t0p" not in haystacks["recordings"], "a token in a query is masked when recorded"
