"""The web edge under hostile input, on a real node: sign-in never redirects off the site, no
vault row for an account the target has not got, locks shown only to who may see them,
unusable JSON and unparsable HTTP answered as problems (never a 500 or an echo)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from datetime import timedelta
from urllib.parse import quote

import aiohttp
import pytest

from gateway.web.routes import API, TABLE
from gateway.web.ui import safe_next
from policy.service import SYSTEM_ACTOR
from tests.gateway.web.conftest import Web
from tests.target import TARGET_USER

OFF_SITE = [
    "/\t/evil.example/x",
    "/\n/evil.example/x",
    "/\r/evil.example/x",
    "/\t\t//evil.example",
    "\t//evil.example",
    "/\\evil.example",
    "//evil.example/x",
    "https://evil.example/",
    "javascript:alert(1)",
    "evil.example",
]


async def _sign_in(web: Web, next_url: str) -> str:
    form = {
        "user": web.user("approver"),
        "password": web.passwords["approver"],
        "code": web.totp_code("approver"),
        "next": next_url,
    }
    jar = aiohttp.CookieJar(unsafe=True)
    async with (
        aiohttp.ClientSession(cookie_jar=jar) as client,
        client.post(
            web.base + "/login", data=form, headers={"Origin": web.base}, allow_redirects=False
        ) as response,
    ):
        assert response.status == 303
        return response.headers["Location"]


@pytest.mark.parametrize("value", OFF_SITE)
def test_a_next_that_a_browser_would_read_as_another_site_becomes_the_home_page(
    value: str,
) -> None:
    assert safe_next(value) == "/"


def test_a_path_on_this_site_is_kept_as_next() -> None:
    for value in ("/", "/recordings?user=alice&q=a%2Fb", "/approvals#x"):
        assert safe_next(value) == value


async def test_sign_in_redirects_only_to_a_path_on_this_site(web: Web) -> None:
    for value in OFF_SITE:
        status, body, _ = await web.call("GET", "/login?next=" + quote(value))
        assert status == 200 and 'name="next" value="/"' in body, repr(value)
    # One real sign-in (a TOTP code is good once) with the tab trick.
    assert await _sign_in(web, "/\t/evil.example/x") == "/"


async def test_a_credential_is_stored_only_for_an_account_of_the_target(web: Web) -> None:
    for account in ("..%2F..%2Fetc%2Fpasswd", "ro%00ot", "%3Cb%3Ex", "nobody"):
        status, body, _ = await web.call(
            "PUT",
            f"{API}/credentials/db01/{account}",
            "admin",
            json={"kind": "password", "value": "never-stored-1"},
        )
        assert status == 404, (account, body)  # the target has no such account: no such slot
        assert body["type"] == "urn:lockgate:problem:not-found" and "account" in body["detail"]
    listing = await web.node.services.vault.list_credentials()
    assert [(c.target, c.account) for c in listing] == [("db01", TARGET_USER)]


async def test_auditors_read_credential_metadata_and_requesters_do_not(web: Web) -> None:
    status, listing, _ = await web.call("GET", f"{API}/credentials", "auditor")
    assert status == 200 and [c["account"] for c in listing["items"]] == [TARGET_USER]
    status, _, _ = await web.call("GET", f"{API}/credentials", "requester")
    assert status == 403
    status, _, _ = await web.call(
        "PUT", f"{API}/credentials/db01/{TARGET_USER}", "auditor", json={"kind": "password"}
    )
    assert status == 403


async def test_locks_are_shown_to_whom_they_concern(web: Web) -> None:
    policy = web.policy
    await policy.lock(SYSTEM_ACTOR, "user", "mallory", "impossible travel (SIEM)")
    await policy.lock(SYSTEM_ACTOR, "user", "alice", "on leave")

    async def seen(role: str) -> set[str]:
        status, locks, _ = await web.call("GET", f"{API}/locks", role)
        assert status == 200
        return {lk["name"] for lk in locks["items"]}

    assert await seen("requester") == {"alice"}
    assert await seen("other") == {"mallory"}
    assert await seen("approver") == set()  # nothing to decide yet
    assert await seen("auditor") == await seen("admin") == {"alice", "mallory"}
    # A pending request by alice that bob may approve shows him alice's lock, not mallory's.
    await policy.unlock(SYSTEM_ACTOR, "user", "alice")
    await policy.create_request(
        "alice", "db01", account=TARGET_USER, duration=timedelta(minutes=30), reason="INC-9"
    )
    await policy.lock(SYSTEM_ACTOR, "user", "alice", "ticket flagged")
    await policy.lock(SYSTEM_ACTOR, "target", "db01", "maintenance")
    assert await seen("approver") == {"alice", "db01"}
    _, locks, _ = await web.call("GET", f"{API}/locks", "other")
    assert [lk["reason"] for lk in locks["items"]] == ["impossible travel (SIEM)"]


DEEP = b"[" * 30_000 + b"]" * 30_000
SURROGATE = b'{"reason": "\\ud800", "comment": "\\udfff", "action": "alert"}'


def _json_routes() -> list[tuple[str, str]]:
    return [(r.method, re.sub(r"\{\w+\}", "x", r.path)) for r in TABLE.routes if r.body is not None]


async def test_unusable_json_is_a_400_problem_on_every_json_route(
    web: Web, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    routes = _json_routes()
    assert ("POST", "/signals") in routes and len(routes) > 10
    for method, path in routes:
        for raw in (DEEP, SURROGATE, b'{"a": ' * 100 + b"1" + b"}" * 100):
            role = "anonymous" if path == "/signals" else "admin"
            status, body, headers = await web.call(
                method,
                API + path,
                role,
                data=raw,
                headers={"Content-Type": "application/json"},
            )
            assert status == 400, (method, path, raw[:20], status, body)
            assert headers["Content-Type"].startswith("application/problem+json")
            assert body["type"] == "urn:lockgate:problem:bad-request"
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def _raw(web: Web, data: bytes) -> tuple[bytes, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", web.node.http_port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return lines[0].encode(), headers, body


PARSER_REJECTS = (
    b"GET /<script>x</script> HTTP/1.1\r\nHost: a\r\nBad Header <i>echo</i>\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: " + b"<i>echo</i>" * 2000 + b"\r\n\r\n",
    b"<i>echo</i> / HTTP/1.1\r\n\r\n",
)


async def test_requests_the_parser_rejects_are_problems_with_the_security_headers(
    web: Web, caplog: pytest.LogCaptureFixture
) -> None:
    for request_bytes in PARSER_REJECTS:
        await _parser_reject(web, request_bytes)
    assert "Traceback" not in caplog.text


async def _parser_reject(web: Web, request_bytes: bytes) -> None:
    status_line, headers, body = await _raw(web, request_bytes)
    assert status_line.split()[1].startswith(b"4"), status_line
    assert headers["content-type"].startswith("application/problem+json")
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    problem = json.loads(body)
    assert problem["type"].startswith("urn:lockgate:problem:")
    assert b"echo" not in body and b"script" not in body


async def test_a_request_line_over_the_limit_is_a_documented_400_naming_the_limit(
    web: Web,
) -> None:
    """The fuzzer's find: a query of thousands of parameters never reaches a route, so every
    operation of the OpenAPI document lists the 400 it gets."""
    long_query = "&".join(f"at={i}" for i in range(2000))
    request_bytes = f"GET {API}/sessions?{long_query} HTTP/1.1\r\nHost: a\r\n\r\n".encode()
    status_line, _, body = await _raw(web, request_bytes)
    assert status_line.split()[1] == b"400", status_line
    problem = json.loads(body)
    assert problem["detail"] == "a line of the request is longer than 8190 bytes"
    assert b"at=1" not in body
    status, document, _ = await web.call("GET", f"{API}/openapi.json", "requester")
    assert status == 200
    operations = [op for item in document["paths"].values() for op in item.values()]
    assert operations and all("400" in op["responses"] for op in operations)


async def test_a_refused_action_leaves_an_audit_trace(web: Web) -> None:
    request = await web.policy.create_request(
        "alice", "db01", account=TARGET_USER, duration=timedelta(minutes=30), reason="INC-5"
    )
    status, body, _ = await web.call(
        "POST", f"{API}/requests/{request.id}/approve", "requester", json={}
    )
    assert status == 403 and "own" in body["detail"]
    status, _, _ = await web.call("GET", f"{API}/audit", "requester")
    assert status == 403
    refused = [
        (e.actor, e.subject, e.details["reason"])
        for e in await web.node.services.audit.events()
        if e.action == "api.refused"
    ]
    assert ("alice", "POST /requests/{id}/approve", body["detail"]) in refused
    assert any(s == "GET /audit" for a, s, _ in refused if a == "alice")
