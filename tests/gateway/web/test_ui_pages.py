"""The web UI's pages as HTML: every page is built from the Jinja2 templates, escapes what
people and terminals supply, carries the unchanged CSP and no inline script, style or
event-handler attribute; and no HTML is left in Python code."""

from __future__ import annotations

import ast
import asyncio
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import gateway
from tests.gateway.web.conftest import Web
from tests.target import TARGET_USER

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
XSS = '<script>alert("lockgate")</script>'
ESCAPED = "&lt;script&gt;alert(&#34;lockgate&#34;)&lt;/script&gt;"
HTML_MARKERS = ("<html", "</", "<div", "<form", "<table", "<a ")


class PageChecker(HTMLParser):
    """Collects what the CSP forbids or what would load from elsewhere."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            src = values.get("src")
            if not src:
                self.problems.append("inline <script>")
            else:
                self.scripts.append(src)
        if tag == "style":
            self.problems.append("inline <style>")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"event handler {name}= on <{tag}>")
            if name == "style":
                self.problems.append(f"style attribute on <{tag}>")
            if name in ("href", "src", "action") and value is not None:
                low = value.strip().lower()
                if low.startswith(("javascript:", "http:", "https:", "//", "data:")):
                    self.problems.append(f"{name}={value!r} on <{tag}>")


def check_page(body: str) -> PageChecker:
    checker = PageChecker()
    checker.feed(body)
    checker.close()
    assert checker.problems == []
    assert all(src.startswith("/static/") for src in checker.scripts)
    assert body.count("<html") == 1 and body.count("<main>") == 1  # one layout, once
    return checker


async def page(web: Web, path: str, role: str) -> str:
    status, body, headers = await web.call("GET", path, role)
    assert status == 200, (path, status, body)
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Content-Security-Policy"] == CSP
    assert XSS not in body
    check_page(body)
    return str(body)


def test_no_python_module_in_gateway_holds_html() -> None:
    root = Path(gateway.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                low = node.value.lower()
                if any(marker in low for marker in HTML_MARKERS):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert found == [], f"HTML belongs in gateway/web/templates, found in {found}"


async def test_sign_in_page_escapes_a_reflected_next_and_is_script_free(web: Web) -> None:
    body = await page(web, "/login?next=/%22%3E" + XSS, "anonymous")
    assert 'value="/&#34;&gt;' + ESCAPED + '"' in body
    assert 'name="csrf-token"' not in body and "<nav>" not in body


async def test_a_reason_with_script_is_text_on_my_access_approvals_and_audit(web: Web) -> None:
    await web.policy.create_request(
        "alice", "db01", account=TARGET_USER, duration=timedelta(hours=1), reason=XSS
    )
    mine = await page(web, "/", "requester")
    assert f"<td>{ESCAPED}</td>" in mine and 'id="request-form"' in mine
    queue = await page(web, "/approvals", "approver")
    assert f"<td>{ESCAPED}</td>" in queue and 'data-api="/api/v1/requests/' in queue
    audit = await page(web, "/audit", "auditor")
    assert ESCAPED in audit and "Hash chain intact" in audit
    assert "<nav>" in audit and 'href="/recordings"' in audit  # an auditor's navigation


async def test_recordings_filters_are_escaped_in_their_fields(web: Web) -> None:
    body = await page(web, "/recordings?user=%22%3E" + XSS + "&target=" + XSS + "&q=", "auditor")
    assert 'name="user" value="&#34;&gt;' + ESCAPED + '"' in body
    assert 'name="target" value="' + ESCAPED + '"' in body


async def test_live_replay_and_search_pages_show_terminal_text_escaped(web: Web) -> None:
    await web.grant("requester")
    ssh = await asyncio.create_subprocess_exec(
        *web.ssh_argv("requester", f"alice+{TARGET_USER}@db01", "-tt"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert ssh.stdin is not None
    for _ in range(300):
        if web.node.registry.sessions:
            break
        await asyncio.sleep(0.05)
    session_id = next(iter(web.node.registry.sessions))

    listed = await page(web, "/sessions", "admin")
    assert f"<td>{session_id}</td>" in listed
    assert f'href="/sessions/{session_id}/live"' in listed and "inline terminate" in listed
    live = await page(web, f"/sessions/{session_id}/live", "admin")
    assert f'id="live-status" data-session="{session_id}"' in live
    assert '<script src="/static/live.js" defer></script>' in live and 'class="terminate"' in live
    assert "terminate" not in await page(web, f"/sessions/{session_id}/live", "auditor")

    ssh.stdin.write(f"echo 'xssline {XSS}'; exit\n".encode())
    await ssh.stdin.drain()
    await asyncio.wait_for(ssh.communicate(), 60)
    await web.indexed_recording(session_id)

    replay = await page(web, f"/recordings/{session_id}", "auditor")
    assert f'id="viewer" data-session="{session_id}"' in replay
    assert '<option value="1" selected>' in replay
    assert '<script src="/static/replay.js" defer></script>' in replay
    hits = await page(web, "/recordings?q=xssline", "auditor")
    assert f'href="/recordings/{session_id}?t=' in hits and ESCAPED in hits
    recent = await page(web, "/recordings", "auditor")
    assert f'<a href="/recordings/{session_id}">{session_id}</a>' in recent


async def test_provisioned_page_lists_what_exists_for_auditors_only(web: Web) -> None:
    services = web.node.services
    target = await services.policy.get_target("db01")
    store = services.provisioner.store
    item, _ = await store.create(
        target, "account", "lg-alice-0badc0de", "gr-0badc0de", "alice", ("lgops",), (),
        owner="n", now=services.policy.now(),
    )  # fmt: skip
    await store.move(
        item, "revoking", now=services.policy.now(), from_states=("creating",),
        reason="creation failed", error="target said " + XSS,
    )  # fmt: skip
    body = await page(web, "/provisioned", "auditor")
    assert "<td>lg-alice-0badc0de</td>" in body and "revoking" in body
    assert "target said " + ESCAPED in body
    status, _, _ = await web.call("GET", "/provisioned", "requester")
    assert status == 403
