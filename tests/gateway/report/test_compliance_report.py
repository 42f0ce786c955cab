"""``lockgate report``, the API's /report and the auditor's page, checked against sessions
this test makes with real OpenSSH clients through the gateway to a real sshd: who, what,
when, why, approved by whom, the commands run, the file sent, the anomaly hit, the
recordings and the audit chain verified; the HTML export opened in headless Chromium loads
nothing from anywhere. Edited recordings and audit rows make the report say so."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from selenium.webdriver.common.by import By

from gateway.cli.main import main
from gateway.db.tables import audit_events
from policy.service import SYSTEM_ACTOR
from tests.eventually import eventually
from tests.gateway.web.conftest import Web
from tests.gateway.web.test_browser import new_browser
from tests.gateway.web.test_ui_pages import page
from tests.target import SCRATCH, TARGET_USER

LOGIN = f"alice+{TARGET_USER}@db01"


async def lockgate(web: Web, *argv: str, remote: str = "") -> tuple[int, str, str]:
    """The real command line: on the gateway host in this process (a worker thread), or
    through the API (``remote``: as that role) in a child process with LOCKGATE_URL."""
    if not remote:
        config = web.workdir / "host.toml"
        config.write_text(
            f'[server]\ndata_dir = "{web.node.config.server.data_dir}"\n'
            'public_url = "https://gw.example.com"\n'
            f'[database]\nurl = "{web.node.config.database_url}"\n'
        )
        out, err = io.StringIO(), io.StringIO()
        status = await asyncio.to_thread(main, [*argv, "--config", str(config)], out, err)
        return status, out.getvalue(), err.getvalue()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    env["LOCKGATE_URL"], env["LOCKGATE_TOKEN"] = web.base, web.tokens[remote]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


async def run(argv: list[str]) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out, err


def scp_argv(web: Web, src: Path, dest: str) -> list[str]:
    ssh = web.ssh_argv("requester", LOGIN)
    options = ssh[3:-1]  # -i KEY -o ... -F /dev/null, without "ssh -p PORT" and the login
    return ["scp", "-P", str(web.node.ssh_port), *options, str(src), dest]


async def sealed_and_indexed(web: Web) -> list[str]:
    deps = web.node.deps
    assert deps is not None
    mine = [s for s in await deps.sessions.list(SYSTEM_ACTOR) if s.user == "alice"]
    if len(mine) < 2 or any(s.active for s in mine):
        return []
    for session in mine:
        info = await deps.recordings.get(session.id)
        if not info.indexed:
            return []
    return sorted(s.id for s in mine)


async def test_the_report_holds_what_happened_and_says_it_verifies(
    web: Web, tmp_path: Path
) -> None:
    policy = web.policy
    request = await policy.create_request(
        "alice",
        "db01",
        account=TARGET_USER,
        duration=timedelta(hours=1),
        reason="INC-42 rotate the logs",
        ticket="INC-42",
    )
    await policy.approve("bob", request.id, "go ahead")
    grant_id = (await policy.get_request(SYSTEM_ACTOR, request.id)).grant_id
    assert grant_id
    other = await policy.create_request(
        "mallory", "db01", account=TARGET_USER, duration=timedelta(minutes=30), reason="look"
    )
    await policy.approve("ada", other.id)
    other_grant = (await policy.get_request(SYSTEM_ACTOR, other.id)).grant_id
    assert other_grant
    await policy.revoke("ada", other_grant, "not needed after all")

    status, out, err = await run(
        web.ssh_argv("requester", LOGIN, "echo report-one; echo lockgate-canary-word")
    )
    assert status == 0 and b"report-one" in out, err
    payload = tmp_path / "upload.bin"
    payload.write_bytes(os.urandom(54_321))
    status, _, err = await run(
        scp_argv(web, payload, f"{LOGIN}@127.0.0.1:{SCRATCH}report-upload.bin")
    )
    assert status == 0, err
    ids = await eventually(lambda: sealed_and_indexed(web), what="both sessions indexed")
    extension = await policy.extend("alice", grant_id, timedelta(minutes=30), "one more check")
    await policy.approve("bob", extension.id, "fine")

    status, out, err = await lockgate(web, "report", "--since", "7d", "--format", "json")
    assert status == 0, err
    report = json.loads(out)
    assert report["audit_ok"] is True and report["recordings_failed"] == []
    assert report["verified"] is True and report["sessions"] == 2
    by_id = {g["id"]: g for g in report["grants"]}
    assert set(by_id) == {grant_id, other_grant}
    grant = by_id[grant_id]
    assert (grant["user"], grant["target"], grant["account"]) == ("alice", "db01", TARGET_USER)
    assert grant["reason"] == "INC-42 rotate the logs" and grant["ticket"] == "INC-42"
    assert grant["requested_at"] == request.created_at.isoformat()
    assert [(a["approver"], a["comment"]) for a in grant["approvals"]] == [("bob", "go ahead")]
    assert [
        (
            e["request_id"],
            e["duration"],
            e["reason"],
            e["state"],
            [a["approver"] for a in e["approvals"]],
        )
        for e in grant["extensions"]
    ] == [(extension.id, "30m", "one more check", "approved", ["bob"])]
    assert (
        grant["expires_at"]
        == (await policy.get_grant(SYSTEM_ACTOR, grant_id)).expires_at.isoformat()
    )
    sessions = {s["id"]: s for s in grant["sessions"]}
    assert sorted(sessions) == ids
    shell = next(s for s in sessions.values() if s["commands"] and not s["files"])
    assert [c["text"] for c in shell["commands"]] == ["echo report-one; echo lockgate-canary-word"]
    assert [(a["rule"], a["action"]) for a in shell["anomalies"]] == [("canary", "alert")]
    copy = next(s for s in sessions.values() if s["files"])
    assert {"op": "sftp.upload", "path": f"{SCRATCH}report-upload.bin", "bytes": 54_321} in [
        {k: f[k] for k in ("op", "path", "bytes")} for f in copy["files"]
    ]
    for session in sessions.values():
        assert session["recording_status"] == "verified"
        assert session["recording"] == f"https://gw.example.com/recordings/{session['id']}"
        assert session["ended_at"] and session["end_reason"]
        assert session["started_at"] <= session["ended_at"]
    revoked = by_id[other_grant]
    assert revoked["revoked_by"] == "ada" and revoked["sessions"] == []
    assert [a["approver"] for a in revoked["approvals"]] == ["ada"]

    status, out, err = await lockgate(web, "report", "--since", "7d", "--format", "csv")
    assert status == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert sorted(r["session"] for r in rows) == sorted([*ids, ""])
    assert {r["approved_by"].split(" at ")[0] for r in rows} == {"bob", "ada"}
    status, out, _ = await lockgate(
        web, "report", "--since", "7d", "--user", "mallory", "--format", "csv"
    )
    assert [r["grant"] for r in csv.DictReader(io.StringIO(out))] == [other_grant]
    status, out, err = await lockgate(
        web, "report", "--since", "7d", "--format", "csv", remote="auditor"
    )
    assert status == 0, err
    assert len(list(csv.DictReader(io.StringIO(out)))) == 3
    status, _, err = await lockgate(web, "report", "--since", "7d", remote="requester")
    assert status == 1 and "auditor" in err
    status, _, err = await lockgate(web, "report", "--since", "soon")
    assert status == 2 and err.startswith("lockgate: ")

    html_file = tmp_path / "report.html"
    status, _, err = await lockgate(
        web, "report", "--since", "7d", "--format", "html", "--output", str(html_file)
    )
    assert status == 0, err
    seen = await asyncio.to_thread(_open_in_chromium, html_file)
    assert seen["resources"] == 0  # nothing fetched: the file stands alone
    assert seen["sessions"] == 2 and seen["ok_colour"] == "rgba(17, 113, 58, 1)"
    assert seen["audit"].startswith("verified") and seen["recordings"].startswith("verified")
    assert "echo report-one; echo lockgate-canary-word" in seen["text"]
    assert "bob at " in seen["text"] and "INC-42 rotate the logs" in seen["text"]
    assert "30m more, asked" in seen["text"] and '("one more check"): approved' in seen["text"]

    status, body, headers = await web.call("GET", "/api/v1/report?since=7d&format=html", "auditor")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "attachment" in headers["Content-Disposition"]
    assert "<style>" in body and "<script" not in body and grant_id in body
    status, _, _ = await web.call("GET", "/api/v1/report?since=7d&format=pdf", "auditor")
    assert status == 422
    shown = await page(web, "/report?since=7d", "auditor")  # the site's CSP, no inline style
    assert grant_id in shown and "Audit chain verified" in shown
    status, _, _ = await web.call("GET", "/report?since=7d", "requester")
    assert status == 403

    # An edited recording and an edited audit row: the report says so.
    info = await web.node.deps.recordings.get(ids[0])  # type: ignore[union-attr]
    data = bytearray(info.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    info.path.write_bytes(bytes(data))
    async with web.node.services.maker() as db, db.begin():
        await db.execute(
            sa.update(audit_events).where(audit_events.c.seq == 3).values(actor="someone-else")
        )
    status, out, err = await lockgate(web, "report", "--since", "7d", "--format", "json")
    tampered: dict[str, Any] = json.loads(out)
    assert tampered["audit_ok"] is False and "event 3" in tampered["audit_problem"]
    assert [sid for sid, _ in tampered["recordings_failed"]] == [ids[0]]
    assert tampered["verified"] is False


def _open_in_chromium(path: Path) -> dict[str, Any]:
    driver = new_browser()
    try:
        driver.get(path.as_uri())
        return {
            "resources": driver.execute_script(
                "return performance.getEntriesByType('resource').length"
            ),
            "sessions": len(driver.find_elements(By.CSS_SELECTOR, "tr.session")),
            "ok_colour": driver.find_element(
                By.CSS_SELECTOR, "#audit-chain .ok"
            ).value_of_css_property("color"),
            "audit": driver.find_element(By.ID, "audit-chain").text,
            "recordings": driver.find_element(By.ID, "recordings").text,
            "text": driver.find_element(By.TAG_NAME, "body").text,
        }
    finally:
        driver.quit()
