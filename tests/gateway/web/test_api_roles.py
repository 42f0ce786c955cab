"""Every API route against every role: anonymous, the requester who owns the objects,
another requester, an approver, an auditor and an admin, on a real server.

Reads run against one set of objects (alice's grant, pending request, finished session and
its recording). Each state change gets a fresh object per role, so every expectation holds
whatever order the roles run in. A route missing from these tables fails the test."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from gateway.web.routes import API, TABLE
from policy.service import SYSTEM_ACTOR
from recorder.errors import NotFound as NoRecording
from tests.eventually import eventually
from tests.gateway.web.conftest import ROLES, Web
from tests.target import TARGET_USER

A = ROLES[0]  # anonymous


def expect(default: int, **by_role: int) -> dict[str, int]:
    """Status per role: 401 for anonymous, ``default`` for the rest unless named."""
    names = dict(
        zip(("anonymous", "requester", "other", "approver", "auditor", "admin"), ROLES, strict=True)
    )
    table = {role: default for role in ROLES}
    table[A] = 401
    for key, status in by_role.items():
        table[names[key]] = status
    return table


@dataclass
class Objects:
    request: str
    grant: str
    session: str


async def finished_session(web: Web) -> tuple[str, str]:
    _, grant = await web.grant("requester")
    proc = await asyncio.create_subprocess_exec(
        *web.ssh_argv("requester", f"alice+{TARGET_USER}@db01", "echo", "matrix-marker"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    assert b"matrix-marker" in out
    deps = web.node.deps
    assert deps is not None

    async def indexed() -> str | None:
        mine = [s for s in await deps.sessions.list(SYSTEM_ACTOR) if s.user == "alice"]
        if mine and not mine[0].active:
            with contextlib.suppress(NoRecording):
                if (await deps.recordings.get(mine[0].id)).indexed:
                    assert grant == mine[0].grant_id
                    return mine[0].id
        return None

    # the recording is indexed by a child process after the seal
    session_id = await eventually(indexed, interval=0.1, what="the session's recording indexed")
    return session_id, grant


READS: list[tuple[str, dict[str, int]]] = [
    ("/whoami", expect(200)),
    ("/targets", expect(200)),
    ("/targets/db01", expect(200, approver=404)),
    ("/rules", expect(200)),
    ("/requests", expect(200)),
    ("/requests/{request}", expect(200, other=404)),
    ("/grants", expect(200)),
    ("/grants/{grant}", expect(200, other=404, approver=404)),
    ("/locks", expect(200)),
    ("/locks/user/alice", expect(200, other=404)),
    ("/users", expect(200, requester=403, other=403, approver=403)),
    ("/users/alice", expect(200, other=404, approver=404)),
    ("/credentials", expect(403, auditor=200, admin=200)),
    ("/sessions", expect(200)),
    ("/sessions/{session}", expect(200, other=404, approver=404)),
    ("/recordings", expect(200)),
    ("/recordings/search?q=matrix-marker", expect(403, auditor=200, admin=200)),
    ("/recordings/verify", expect(403, auditor=200, admin=200)),
    ("/recordings/{session}", expect(200, other=404, approver=404)),
    ("/recordings/{session}/verify", expect(403, auditor=200, admin=200)),
    ("/recordings/{session}/cast", expect(200, other=404, approver=404)),
    ("/recordings/{session}/frames?at=0.5", expect(200, other=404, approver=404)),
    ("/recordings/{session}/requests", expect(200, other=404, approver=404)),
    ("/audit", expect(403, auditor=200, admin=200)),
    ("/audit/verify", expect(403, auditor=200, admin=200)),
    ("/provisioned", expect(403, auditor=200, admin=200)),
    ("/nodes", expect(403, auditor=200, admin=200)),
    ("/notifications", expect(403, auditor=200, admin=200)),
    ("/audit/streams", expect(403, auditor=200, admin=200)),
    ("/report?since=7d", expect(403, auditor=200, admin=200)),
    ("/openapi.json", {role: 200 for role in ROLES}),
]

Setup = Callable[[Web], Awaitable[str]]


async def pending_request(web: Web) -> str:
    for old in await web.policy.list_requests("alice", pending_only=True, mine_only=True):
        await web.policy.cancel("alice", old.id)
    req = await web.policy.create_request(
        "alice", "db01", account=TARGET_USER, duration=timedelta(minutes=30), reason="INC-2"
    )
    return req.id


async def active_grant(web: Web) -> str:
    return (await web.grant("requester"))[1]


async def nothing(web: Web) -> str:
    return ""


async def other_user(web: Web) -> str:
    return "mallory"


async def locked_user(web: Web) -> str:
    await web.policy.lock(SYSTEM_ACTOR, "user", "mallory", "matrix")
    return "mallory"


WRITES: list[tuple[str, str, Setup, Any, dict[str, int]]] = [
    (
        "POST",
        "/requests",
        nothing,
        {"target": "db01", "reason": "INC-3", "duration": "10m"},
        expect(201, approver=403, auditor=403, admin=403),
    ),
    (
        "POST",
        "/requests/{x}/approve",
        pending_request,
        {"comment": "ok"},
        expect(403, approver=200, admin=200, other=404),
    ),
    (
        "POST",
        "/requests/{x}/deny",
        pending_request,
        {"comment": "no"},
        expect(403, approver=200, admin=200, other=404),
    ),
    ("POST", "/requests/{x}/cancel", pending_request, {}, expect(404, requester=200, admin=200)),
    (
        "POST",
        "/grants/{x}/revoke",
        active_grant,
        {"reason": "matrix"},
        expect(404, requester=200, admin=200),
    ),
    (
        "POST",
        "/grants/{x}/extend",
        active_grant,
        {"duration": "30m", "reason": "more"},
        expect(404, requester=201, auditor=403, admin=403),
    ),
    (
        "POST",
        "/locks",
        nothing,
        {"kind": "target", "name": "db01", "reason": "matrix"},
        expect(403, admin=201),
    ),
    ("DELETE", "/locks/user/{x}", locked_user, None, expect(403, admin=200)),
    ("POST", "/users", nothing, {"name": "newbie", "roles": ["dev"]}, expect(403, admin=201)),
    (
        "POST",
        "/targets",
        nothing,
        {"name": "web01", "url": "https://web01.internal"},
        expect(403, admin=201),
    ),
    (
        "PUT",
        f"/credentials/db01/{TARGET_USER}",
        nothing,
        {"kind": "password", "value": "matrix-secret-1"},
        expect(403, admin=200),
    ),
    (
        "POST",
        "/targets/db01/provision",
        nothing,
        {"uid_range": "61000-61010"},
        expect(403, admin=200),
    ),
    ("POST", "/tokens", nothing, {"user": "alice"}, expect(403, requester=201, admin=201)),
    ("POST", "/sessions/{x}/terminate", nothing, {"reason": "matrix"}, expect(403, admin=404)),
    ("POST", "/notifications/{x}/retry", nothing, {}, expect(403, admin=404)),
    ("POST", "/users/{x}/change", other_user, {"enable": True}, expect(403, admin=200)),
    # last: it disables the "other" requester
    ("POST", "/users/{x}/disable", other_user, {}, expect(403, admin=200)),
]


def _matches(route_path: str, method: str, test_method: str, test_path: str) -> bool:
    pattern = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(route_path))
    return method == test_method and re.fullmatch(pattern, test_path.split("?")[0]) is not None


def test_every_route_is_in_the_matrix() -> None:
    tested = [("GET", p) for p, _ in READS] + [(m, p.replace("{x}", "x")) for m, p, *_ in WRITES]
    tested += [("POST", "/signals"), ("GET", "/sessions/x/live")]  # test_api_behaviour, test_live
    untested = [
        f"{r.method} {r.path}"
        for r in TABLE.routes
        if not any(_matches(r.path, r.method, m, p) for m, p in tested)
    ]
    assert untested == []
    unknown = [
        f"{m} {p}"
        for m, p in tested
        if not any(_matches(r.path, r.method, m, p) for r in TABLE.routes)
    ]
    assert unknown == []


@pytest.mark.timeout(600)
async def test_reads_by_role(web: Web) -> None:
    session, grant = await finished_session(web)
    request = await pending_request(web)
    # seen by alice, by bob who may decide her pending request, and by auditors
    await web.policy.lock(SYSTEM_ACTOR, "user", "alice", "matrix")
    objects = {"request": request, "grant": grant, "session": session}
    failures = []
    for path, statuses in READS:
        url = API + path.format(**objects)
        for role in ROLES:
            status, body, headers = await web.call("GET", url, role)
            if status != statuses[role]:
                failures.append(f"GET {path} as {role}: {status}, expected {statuses[role]}")
            if status >= 400:
                assert headers["Content-Type"].startswith("application/problem+json"), url
                assert body["status"] == status and body["type"].startswith("urn:lockgate:problem:")
    assert not failures, "\n".join(failures)


@pytest.mark.timeout(600)
async def test_writes_by_role(web: Web) -> None:
    failures = []
    for method, path, setup, body, statuses in WRITES:
        for role in ROLES:
            x = await setup(web)
            url = API + path.replace("{x}", x or "se-unknown")
            status, answer, _ = await web.call(method, url, role, json=body)
            if status != statuses[role]:
                failures.append(
                    f"{method} {path} as {role}: {status} {answer}, expected {statuses[role]}"
                )
    assert not failures, "\n".join(failures)


def test_the_documented_roles_are_the_matrix() -> None:
    """Each operation's ``x-required-roles`` agrees with the statuses above (which the two
    tests before this check against a real server): a role holding none of them is refused
    (403), one holding one of them is not refused for its role."""
    from gateway.web.openapi import document
    from tests.gateway.web.conftest import PEOPLE

    doc = document(TABLE)
    tested = [("GET", p, s) for p, s in READS] + [
        (m, p.replace("{x}", "x"), s) for m, p, _, _, s in WRITES
    ]
    mismatches = []
    for method, path, statuses in tested:
        route = next(r for r in TABLE.routes if _matches(r.path, r.method, method, path))
        op = doc["paths"][API + route.path][method.lower()]
        required = op.get("x-required-roles")
        assert required is not None or op["security"] == [], path
        for role, (_, roles) in PEOPLE.items():
            if not required:
                continue
            holds = any(r in roles for r in required)
            if holds == (statuses[role] == 403):
                mismatches.append(f"{method} {path} as {role}: {statuses[role]}, needs {required}")
    assert mismatches == []
    assert {r.method for r in TABLE.routes if r.access == "admin"} and all(
        doc["paths"][API + r.path][r.method.lower()]["x-required-roles"] == ["admin"]
        for r in TABLE.routes
        if r.access == "admin"
    )
