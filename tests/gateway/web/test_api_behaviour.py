"""The API's edges on a real server: problem documents, the OpenAPI document against the
router, browser sign-in with lockout, CSRF and Origin checks, security headers, SIEM signals,
metrics, and secrets that never come back."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from gateway.signals import SIGNAL_ACCOUNT, SIGNAL_TARGET, sign
from gateway.web.routes import API, MAX_BODY
from policy.service import SYSTEM_ACTOR
from tests.eventually import eventually
from tests.gateway.web.conftest import TLS_PROXY, Web
from tests.target import TARGET_USER
from vault.secret import Secret


def _problem(status: int, body: object, slug: str) -> None:
    assert isinstance(body, dict), body
    assert body["type"] == f"urn:lockgate:problem:{slug}", body
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert "Traceback" not in json.dumps(body)


async def test_errors_are_problem_documents(web: Web) -> None:
    status, body, headers = await web.call("GET", API + "/no/such/thing", "admin")
    assert status == 404 and headers["Content-Type"].startswith("application/problem+json")
    _problem(404, body, "not-found")
    status, body, headers = await web.call("PATCH", API + "/requests", "admin")
    _problem(405, body, "method-not-allowed")
    assert set(headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}
    status, body, _ = await web.call(
        "POST",
        API + "/requests",
        "requester",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    _problem(400, body, "bad-request")
    status, body, _ = await web.call("POST", API + "/requests", "requester", json=["a", "list"])
    _problem(400, body, "bad-request")
    status, body, _ = await web.call(
        "POST", API + "/requests", "requester", json={"target": 7, "evil": 1}
    )
    _problem(422, body, "invalid-input")
    assert (
        "unknown field 'evil'" in body["detail"] and "'target' must be a string" in body["detail"]
    )
    status, body, _ = await web.call("POST", API + "/requests", "requester", json={"reason": "x"})
    _problem(422, body, "invalid-input")
    assert "missing field 'target'" in body["detail"]
    status, body, _ = await web.call(
        "POST",
        API + "/requests",
        "requester",
        json={"target": "db01", "reason": "x" * (MAX_BODY + 10)},
    )
    _problem(413, body, "payload-too-large")
    status, body, _ = await web.call(
        "POST",
        API + "/requests",
        "requester",
        json={"target": "db01", "duration": "forever", "reason": "r"},
    )
    _problem(422, body, "invalid-input")
    status, body, _ = await web.call("GET", API + "/recordings/x/frames?at=nan", "admin")
    _problem(422, body, "invalid-input")
    status, body, _ = await web.call("GET", API + "/audit?since=yesterday", "admin")
    _problem(422, body, "invalid-input")
    status, body, _ = await web.call(
        "GET", API + "/whoami", headers={"Authorization": "Bearer lgt_x_y"}
    )
    _problem(401, body, "unauthorized")
    status, body, _ = await web.call(
        "GET", API + "/whoami", headers={"Authorization": "Basic eDp5"}
    )
    _problem(401, body, "unauthorized")


async def test_openapi_describes_exactly_the_routes(web: Web) -> None:
    status, doc, _ = await web.call("GET", API + "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = set()
    for resource in web.node.runner.app.router.resources():  # type: ignore[union-attr]
        info = resource.get_info()
        path = info.get("path") or info.get("formatter")
        if not path or not path.startswith(API):
            continue
        for route in resource:
            served.add((route.method, path))
    assert documented == served
    assert {p for m, p in served if m == "GET"} == {p for m, p in served if m == "HEAD"}
    for path, ops in doc["paths"].items():
        for op in ops.values():
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == set(re.findall(r"\{(\w+)\}", path)), path


async def test_security_headers(web: Web) -> None:
    for path in ("/login", API + "/whoami", "/static/app.js"):
        async with web.http.get(web.base + path) as response:
            csp = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert "frame-ancestors 'none'" in csp
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["X-Frame-Options"] == "DENY"


def browser(web: Web) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def sign_in(
    web: Web, client: aiohttp.ClientSession, role: str, code: str | None = None
) -> int:
    form = {
        "user": web.user(role),
        "password": web.passwords[role],
        "code": code or web.totp_code(role),
        "next": "/",
    }
    async with client.post(
        web.base + "/login", data=form, headers={"Origin": web.base}, allow_redirects=False
    ) as response:
        return response.status


async def test_sign_in_cookie_and_csrf(web: Web) -> None:
    async with browser(web) as client:
        assert await sign_in(web, client, "approver") == 303
        cookie = next(c for c in client.cookie_jar if c.key == "lockgate_session")
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        async with client.get(web.base + "/") as response:
            page = await response.text()
        token = re.search(r'name="csrf-token" content="([^"]+)"', page)
        assert token is not None
        request_id = (
            await web.policy.create_request(
                "alice", "db01", account=TARGET_USER, duration=timedelta(minutes=5), reason="r"
            )
        ).id
        url = f"{web.base}{API}/requests/{request_id}/approve"
        # Cookie without Origin, with a foreign Origin, without the token, with a wrong one.
        for headers in (
            {"X-CSRF-Token": token.group(1)},
            {"Origin": "http://evil.example", "X-CSRF-Token": token.group(1)},
            {"Origin": web.base},
            {"Origin": web.base, "X-CSRF-Token": "wrong"},
        ):
            async with client.post(url, json={}, headers=headers) as response:
                assert response.status == 403
                _problem(403, await response.json(), "csrf")
        assert (await web.policy.get_request(SYSTEM_ACTOR, request_id)).state == "pending"
        async with client.post(
            url, json={}, headers={"Origin": web.base, "X-CSRF-Token": token.group(1)}
        ) as response:
            assert response.status == 200
        # Sign-out needs the token too, then the cookie is worthless.
        async with client.post(
            web.base + "/logout",
            data={"csrf": token.group(1)},
            headers={"Origin": web.base},
            allow_redirects=False,
        ) as response:
            assert response.status == 303
    async with browser(web) as client:
        client.cookie_jar.update_cookies({"lockgate_session": cookie.value})
        async with client.get(f"{web.base}{API}/whoami") as response:
            assert response.status == 401


async def test_sign_in_refusals_look_alike_and_lock_out(web: Web) -> None:
    async with browser(web) as client:
        # Cross-site sign-in is refused before any check.
        async with client.post(
            web.base + "/login", data={"user": "bob"}, headers={"Origin": "http://evil.example"}
        ) as response:
            assert response.status == 403
        wrong_password = {
            "user": "bob",
            "password": "nope",
            "code": web.totp_code("approver"),
            "next": "/",
        }
        no_such_user = {"user": "nobody", "password": "nope", "code": "123456", "next": "/"}
        texts = []
        for form in (wrong_password, no_such_user):
            async with client.post(
                web.base + "/login", data=form, headers={"Origin": web.base}
            ) as response:
                assert response.status == 401
                texts.append((await response.text()).replace("nobody", "bob"))
        assert texts[0] == texts[1]
        # A good password with a wrong TOTP fails the same way.
        assert await sign_in(web, client, "approver", code="000000") == 401
        for _ in range(5):
            await sign_in(web, client, "approver", code="000000")
        # Locked out now: even the right password and code are refused.
        assert await sign_in(web, client, "approver") == 401
    events = await web.node.services.audit.events()
    failures = [e for e in events if e.action == "auth.failure" and e.details.get("via") == "web"]
    assert len(failures) >= 8
    dump = json.dumps([e.details for e in failures]) + json.dumps([e.subject for e in failures])
    assert "nope" not in dump and web.passwords["approver"] not in dump


async def test_self_approval_refused(web: Web) -> None:
    status, created, _ = await web.call(
        "POST", API + "/requests", "admin", json={"target": "db01", "reason": "r"}
    )
    assert status == 403  # ada has no rule for db01: she cannot even ask
    status, created, _ = await web.call(
        "POST",
        API + "/requests",
        "requester",
        json={"target": "db01", "reason": "INC-5", "duration": "15m"},
    )
    assert status == 201 and created["state"] == "pending"
    status, body, _ = await web.call(
        "POST", f"{API}/requests/{created['id']}/approve", "requester", json={}
    )
    assert status == 403
    assert "own" in body["detail"]


async def test_credentials_are_write_only_and_tokens_shown_once(web: Web) -> None:
    secret = "s3cret-never-shown-" + str(time.time())
    await web.policy.add_target(
        SYSTEM_ACTOR, "db02", host="127.0.0.1", host_key=web.sshd.host_key, accounts=["backup"]
    )
    status, body, _ = await web.call(
        "PUT", API + "/credentials/db02/backup", "admin", json={"kind": "password", "value": secret}
    )
    assert status == 200 and body["kind"] == "password"
    status, listing, _ = await web.call("GET", API + "/credentials", "admin")
    assert status == 200 and any(c["account"] == "backup" for c in listing["items"])
    everything = json.dumps([body, listing])
    assert secret not in everything and web.node.services.config.master_key not in everything
    status, created, _ = await web.call(
        "POST", API + "/tokens", "requester", json={"user": "alice"}
    )
    assert status == 201 and created["token"].startswith("lgt_")
    status, me, _ = await web.call(
        "GET", API + "/whoami", headers={"Authorization": f"Bearer {created['token']}"}
    )
    assert status == 200 and me["user"]["name"] == "alice"
    status, audit, _ = await web.call("GET", API + "/audit", "admin")
    dump = json.dumps(audit)
    assert secret not in dump and created["token"] not in dump and web.tokens["admin"] not in dump


async def _signal(
    web: Web, body: dict[str, object], secret: bytes, ts: int | None = None
) -> tuple[int, object]:
    raw = json.dumps(body).encode()
    stamp = str(ts if ts is not None else int(time.time()))
    status, answer, _ = await web.call(
        "POST",
        API + "/signals",
        data=raw,
        headers={
            "Content-Type": "application/json",
            "X-Lockgate-Timestamp": stamp,
            "X-Lockgate-Signature": sign(secret, stamp, raw),
        },
    )
    return status, answer


@pytest.mark.timeout(300)
async def test_signed_signal_kills_and_locks(web: Web) -> None:
    body = {
        "action": "kill_and_lock",
        "user": "alice",
        "reason": "impossible travel",
        "source": "siem",
    }
    status, answer = await _signal(web, body, b"whatever")
    assert status == 503  # no secret configured: nothing happens
    secret = b"siem-shared-secret-" + str(time.time()).encode()
    await web.node.services.vault.set_credential(
        SYSTEM_ACTOR, SIGNAL_TARGET, SIGNAL_ACCOUNT, "password", Secret(secret)
    )
    proc, session_id = await web.live_session()
    status, answer = await _signal(web, body, b"wrong-secret")
    assert status == 401
    status, answer = await _signal(web, body, secret, ts=int(time.time()) - 3600)
    assert status == 401
    assert web.node.registry.get(session_id) is not None
    raw = json.dumps(body).encode()
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Lockgate-Timestamp": stamp,
        "X-Lockgate-Signature": sign(secret, stamp, raw),
    }
    status, answer, _ = await web.call("POST", API + "/signals", data=raw, headers=headers)
    assert status == 200, answer
    assert answer["sessions"] == [session_id] and answer["locked"] == ["user:alice"]
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode != 0
    assert b"[lockgate] session terminated: " in err
    assert b"signal from siem: impossible travel" in err
    status, answer, _ = await web.call("POST", API + "/signals", data=raw, headers=headers)
    assert status == 409  # the same signed request again: a replay
    locks = await web.policy.list_locks()
    assert any(lock.kind == "user" and lock.name == "alice" for lock in locks)
    audit = json.dumps([e.details for e in await web.node.services.audit.events()])
    assert secret.decode() not in audit


async def test_signal_cannot_grant(web: Web) -> None:
    secret = b"another-secret"
    await web.node.services.vault.set_credential(
        SYSTEM_ACTOR, SIGNAL_TARGET, SIGNAL_ACCOUNT, "password", Secret(secret)
    )
    for action in ("unlock", "approve", "grant"):
        status, _ = await _signal(web, {"action": action, "user": "alice"}, secret)
        assert status == 422
    status, _ = await _signal(web, {"action": "kill"}, secret)
    assert status == 422  # no selector


async def test_metrics_after_a_session(web: Web) -> None:
    proc, session_id = await web.live_session()
    status, _, _ = await web.call(
        "POST", f"{API}/sessions/{session_id}/terminate", "admin", json={"reason": "metrics check"}
    )
    assert status == 202  # accepted: the node holding it ends it
    await asyncio.wait_for(proc.communicate(), 30)
    # The kill is counted once both legs are closed, which can be just after the client exits.
    killed = 'lockgate_kills_total{reason="admin"} 1.0'

    async def counted() -> str | None:
        status, text, _ = await web.call("GET", "/metrics")
        assert status == 200
        return (
            text if killed in text and 'lockgate_sessions_total{outcome="admin"}' in text else None
        )

    text = await eventually(counted, what="the kill counted in /metrics")
    for name in (
        "lockgate_sessions_active",
        "lockgate_sessions_total",
        "lockgate_bytes_total",
        "lockgate_auth_failures_total",
        "lockgate_grants_active",
        "lockgate_requests_pending",
        "lockgate_kills_total",
        "lockgate_kill_latency_seconds",
        "lockgate_upstream_connect_seconds",
        "lockgate_recording_index_lag_seconds",
    ):
        assert name in text, name
    assert killed in text
    assert "lockgate_grants_active 1.0" in text
    assert re.search(r'lockgate_sessions_total\{outcome="admin"\} 1\.0', text)
    assert web.node.services.config.master_key not in text
    for token in web.tokens.values():
        assert token not in text


async def test_frames_window_and_cast(web: Web) -> None:
    await web.grant("requester")
    proc = await asyncio.create_subprocess_exec(
        *web.ssh_argv(
            "requester",
            f"alice+{TARGET_USER}@db01",
            "-tt",
            "echo one; sleep 0.3; echo '<b>two</b>'",
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.wait_for(proc.communicate(), 60)
    deps = web.node.deps
    assert deps is not None
    session = (await deps.sessions.list(SYSTEM_ACTOR))[0]
    info = await web.indexed_recording(session.id)
    assert info["user"] == "alice" and info["grant"]["reason"] == "INC-1 test"
    assert info["grant"]["approvers"] == ["bob"]
    status, window, _ = await web.call(
        "GET", f"{API}/recordings/{session.id}/frames?from=0&to={info['duration'] + 1}", "requester"
    )
    assert status == 200
    screens = ["\n".join(f["lines"]) for f in window["frames"]]
    assert any("one" in s and "two" not in s for s in screens)
    assert "<b>two</b>" in screens[-1]
    times = [f["t"] for f in window["frames"]]
    assert times == sorted(times)
    status, cut, _ = await web.call(
        "GET", f"{API}/recordings/{session.id}/frames?from=0.5&to=1000", "requester"
    )
    assert status == 200 and all(0.5 <= f["t"] <= 60.5 for f in cut["frames"])  # cut at 60 s
    status, backwards, _ = await web.call(
        "GET", f"{API}/recordings/{session.id}/frames?from=2&to=1", "requester"
    )
    assert status == 200 and backwards["frames"] == []
    status, cast, headers = await web.call(
        "GET", f"{API}/recordings/{session.id}/cast", "requester"
    )
    assert status == 200 and headers["Content-Type"].startswith("application/x-asciicast")
    lines = cast.splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2 and header["width"] > 0
    assert any(json.loads(line)[1] == "o" for line in lines[1:])
    assert datetime.fromtimestamp(header["timestamp"], UTC) <= datetime.now(UTC)


async def test_password_alone_never_signs_in(web: Web) -> None:
    await web.policy.set_totp_enabled(SYSTEM_ACTOR, "mallory", False)
    async with browser(web) as client:
        assert await sign_in(web, client, "other", code="") == 401
        assert not [c for c in client.cookie_jar if c.key == "lockgate_session"]


async def test_behind_a_tls_proxy_the_cookie_is_secure(web: Web) -> None:
    """X-Forwarded-Proto and X-Forwarded-For count only from the trusted proxy
    (``server.trusted_proxies``): from anyone else the cookie stays as the connection is and
    the audit has the connection's own address."""
    origin = f"https://{web.base.removeprefix('http://')}"
    form = {
        "user": "bob",
        "password": web.passwords["approver"],
        "code": web.totp_code("approver"),
        "next": "//evil.example/",
    }
    forwarded = {"Origin": origin, "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.50"}
    async with (
        browser(web) as client,
        client.post(web.base + "/login", data=form, headers=forwarded, allow_redirects=False) as r,
    ):
        assert r.status == 403  # not the proxy: the https Origin is another site
        assert "Secure" not in r.headers.get("Set-Cookie", "")
    connector = aiohttp.TCPConnector(local_addr=(TLS_PROXY, 0))
    async with (
        aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True)
        ) as client,
        client.post(
            web.base + "/login", data=form, headers=forwarded, allow_redirects=False
        ) as response,
    ):
        assert response.status == 303
        assert response.headers["Location"] == "/"  # never off-site
        cookie = response.headers["Set-Cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert "max-age=31536000" in response.headers["Strict-Transport-Security"]
    events = await web.node.services.audit.events()
    [success] = [e for e in events if e.action == "auth.success" and e.actor == "bob"][-1:]
    assert success.details["addr"] == "203.0.113.50"
