"""The OpenAPI document as a contract, against a real node seeded with users, targets,
requests, grants, sessions and recordings:

- schemathesis (its CLI, in a subprocess, every check) finds nothing, as an admin and as a
  requester: first its examples and coverage phases plus a fuzzing run with a fixed seed,
  then a bounded run with a fresh seed each time, and the stateful phase over the links;
- a client generated from the document with openapi-python-client runs request, approve
  and the grants listing.

Only on SQLite: the API's answers do not depend on the database kind (the services' tests
run on both), and a second run would double the suite's longest test.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import Node
from gateway.sessions.records import NewSession
from gateway.signals import SIGNAL_ACCOUNT, SIGNAL_TARGET
from gateway.web.routes import API, TABLE
from policy.models import Rule
from policy.service import SYSTEM_ACTOR
from recorder.recorder import Recorder
from tests.libdb import create_engine, fresh_database
from tests.nodes import start_test_node
from vault.secret import Secret

RULES = (
    Rule(
        name="dev",
        roles=frozenset({"dev"}),
        approvals=1,
        approver_roles=frozenset({"approver"}),
        require_reason=True,
    ),
)
PEOPLE = {
    "requester": ("alice", ["dev"]),
    "approver": ("bob", ["approver"]),
    "auditor": ("audrey", ["auditor"]),
    "admin": ("ada", ["admin", "approver"]),
}
HOOKS = "tests.gateway.web.contract_hooks"


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """SQLite only, for this module (see the docstring)."""
    async with fresh_database("sqlite", tmp_path, "", create_engine) as eng:
        yield eng


@dataclass
class Seeded:
    node: Node
    workdir: Path
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.node.http_port}"


def _samples(workdir: Path) -> dict[str, str]:
    """Files of values only the services can judge (keys, certificates), for the hooks."""
    keys = []
    for i in range(3):
        path = workdir / f"fuzz_{i}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        keys.append(path)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz-ca")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    pem = workdir / "fuzz_ca.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return {
        "LOCKGATE_FUZZ_PUBLIC_KEYS": os.pathsep.join(f"{k}.pub" for k in keys),
        "LOCKGATE_FUZZ_PRIVATE_KEYS": os.pathsep.join(str(k) for k in keys),
        "LOCKGATE_FUZZ_CERTS": str(pem),
    }


async def _record(node: Node, sid: str, user: str) -> None:
    await node.services.sessions.started(
        NewSession(sid, "ssh", user, "db01", "root", None, "127.0.0.1")
    )
    recorder = Recorder(node.config.recordings_path, node.services.maker)
    rec = await recorder.start(sid, meta={"user": user, "target": "db01", "kind": "ssh"})
    rec.output(b"hello contract\r\n")
    await rec.close("done")
    await node.services.sessions.ended(sid, user, "done", 0, 0)


@pytest.fixture
async def seeded(db_url: str, tmp_path: Path) -> AsyncIterator[Seeded]:
    node = await start_test_node(db_url, tmp_path, name="contract-node", rules=RULES)
    harness = Seeded(node, tmp_path)
    try:
        policy = node.services.policy
        for role, (name, roles) in PEOPLE.items():
            await policy.add_user(SYSTEM_ACTOR, name, roles=roles)
            harness.tokens[role] = (await policy.create_token(SYSTEM_ACTOR, name))[0]
        await policy.add_user(SYSTEM_ACTOR, "mallory", roles=["dev"])
        await policy.add_target(
            SYSTEM_ACTOR, "db01", host="127.0.0.1", port=2, accounts=["root", "deploy"]
        )
        await policy.add_target(SYSTEM_ACTOR, "web01", kind="http", url="https://web01.internal")
        granted = await policy.create_request(
            "alice", "db01", account="root", duration=timedelta(hours=1), reason="INC-1"
        )
        await policy.approve("bob", granted.id, "ok")
        await policy.create_request(
            "alice", "db01", account="deploy", duration=timedelta(hours=1), reason="INC-2"
        )
        await policy.lock(SYSTEM_ACTOR, "user", "mallory", "contract seed")
        await node.services.vault.set_credential(
            SYSTEM_ACTOR, SIGNAL_TARGET, SIGNAL_ACCOUNT, "password", Secret(b"contract-signals-1")
        )
        await _record(node, "se-contract-1", "alice")
        await _record(node, "se-contract-2", "alice")
        yield harness
    finally:
        await node.stop("test finished")


async def _schemathesis(seeded: Seeded, role: str, *args: str) -> tuple[int, str]:
    env = {**os.environ, **_samples(seeded.workdir), "SCHEMATHESIS_HOOKS": HOOKS}
    env["PYTHONPATH"] = os.pathsep.join([str(Path.cwd()), env.get("PYTHONPATH", "")])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{seeded.base}{API}/openapi.json",
        "--checks",
        "all",
        "-H",
        f"Authorization: Bearer {seeded.tokens[role]}",
        "--report-dir",
        str(seeded.workdir / "reports"),
        "--generation-database",
        "none",
        "--no-color",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=seeded.workdir,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


SEED = 20261218
# The coverage phase (every boundary of every schema, some 4,000 requests a role) takes
# minutes (7.5 for both roles on 2 cores): the suite runs the other phases, and
# LOCKGATE_TEST_FUZZ=full adds it.
FULL = os.environ.get("LOCKGATE_TEST_FUZZ") == "full"
PHASES = "examples,coverage,fuzzing,stateful" if FULL else "examples,fuzzing,stateful"


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("role", "seed"),
    [("admin", SEED), ("requester", None)],
    ids=["admin-fixed", "requester-random"],
)
async def test_schemathesis_finds_nothing(seeded: Seeded, role: str, seed: int | None) -> None:
    """Every check, as an admin with a fixed seed and as a requester with a fresh one (the
    seed is in the failure message, to replay it)."""
    seed = seed or random.randrange(1 << 30)
    status, out = await _schemathesis(
        seeded,
        role,
        "--seed",
        str(seed),
        "--phases",
        PHASES,
        "--max-examples",
        "25" if FULL else "3",
    )
    if os.environ.get("FUZZ_OUT"):
        Path(os.environ["FUZZ_OUT"]).write_text(out)
    assert status == 0, f"seed {seed}\n{out[-20000:]}"
    # every operation of the document was tried (the route table's, GET and HEAD)
    operations = sum(2 if r.method == "GET" else 1 for r in TABLE.routes)
    selected = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", out)
    assert selected is not None, out[-3000:]
    assert len(set(selected.groups())) == 1 and int(selected[1]) >= operations - 1, out[-3000:]


async def test_a_generated_client_runs_request_approve_and_lists_grants(seeded: Seeded) -> None:
    import json

    from aiohttp import ClientSession

    async with (
        ClientSession() as http,
        http.get(f"{seeded.base}{API}/openapi.json") as response,
    ):
        document = await response.json()
    spec = seeded.workdir / "openapi.json"
    spec.write_text(json.dumps(document))
    config = seeded.workdir / "generator.yaml"
    config.write_text("post_hooks: []\n")
    out = seeded.workdir / "generated" / "lockgate_client"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openapi_python_client",
        "generate",
        "--path",
        str(spec),
        "--output-path",
        str(out),
        "--meta",
        "none",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    log, _ = await proc.communicate()
    assert proc.returncode == 0, log.decode()
    sys.path.insert(0, str(out.parent))
    try:
        from lockgate_client import AuthenticatedClient  # type: ignore[import-not-found]
        from lockgate_client.api.access import (  # type: ignore[import-not-found]
            get_list_grants,
            post_approve_request,
            post_create_request,
        )
        from lockgate_client.models import (  # type: ignore[import-not-found]
            AccessRequest,
            Approve,
            GrantPage,
            NewRequest,
        )

        def client(role: str) -> Any:
            return AuthenticatedClient(base_url=seeded.base, token=seeded.tokens[role])

        async with client("requester") as alice, client("approver") as bob:
            policy = seeded.node.services.policy
            for grant in await policy.list_grants("alice", active_only=True):
                await policy.revoke(SYSTEM_ACTOR, grant.id, "make room")
            for pending in await policy.list_requests("alice", pending_only=True):
                await policy.cancel("alice", pending.id)
            asked = await post_create_request.asyncio_detailed(
                client=alice,
                body=NewRequest(target="db01", account="deploy", duration="30m", reason="CHG-7"),
            )
            assert asked.status_code == 201, asked.content
            created = asked.parsed
            assert isinstance(created, AccessRequest) and created.state == "pending"
            assert asked.headers["Location"] == f"{API}/requests/{created.id}"
            approved = await post_approve_request.asyncio(
                client=bob, id=created.id, body=Approve(comment="go")
            )
            assert isinstance(approved, AccessRequest), approved
            assert approved.state == "approved" and approved.grant_id
            page = await get_list_grants.asyncio(client=alice, active=True, limit=1)
            assert isinstance(page, GrantPage)
            assert [g.id for g in page.items] == [approved.grant_id]
            assert page.to_dict()["next"] is None
    finally:
        sys.path.remove(str(out.parent))
        for name in [m for m in sys.modules if m.split(".")[0] == "lockgate_client"]:
            del sys.modules[name]


async def _call(
    seeded: Seeded, method: str, path: str, role: str, body: Any = None, **headers: str
) -> tuple[int, Any, Any]:
    from aiohttp import ClientSession

    headers["Authorization"] = f"Bearer {seeded.tokens[role]}"
    async with (
        ClientSession() as http,
        http.request(method, seeded.base + API + path, json=body, headers=headers) as response,
    ):
        raw = await response.read()
        data = await response.json(content_type=None) if raw else None
        return response.status, data, response.headers


async def test_two_admins_cannot_overwrite_each_other(seeded: Seeded) -> None:
    status, created, headers = await _call(
        seeded, "POST", "/users", "admin", {"name": "carol", "roles": ["dev"]}
    )
    assert status == 201 and headers["Location"] == f"{API}/users/carol"
    status, user, headers = await _call(seeded, "GET", "/users/carol", "admin")
    assert status == 200 and user == created
    read = headers["ETag"]
    status, body, head = await _call(seeded, "HEAD", "/users/carol", "admin")
    assert status == 200 and body is None and head["ETag"] == read
    # The first admin's change applies and gives the new ETag...
    status, changed, headers = await _call(
        seeded,
        "POST",
        "/users/carol/change",
        "admin",
        {"roles": ["dev", "ops"]},
        **{"If-Match": read},
    )
    assert status == 200 and changed["roles"] == ["dev", "ops"] and headers["ETag"] != read
    # ...the second, made from what was read before it, is refused and changes nothing.
    status, problem, _ = await _call(
        seeded, "POST", "/users/carol/change", "admin", {"roles": ["dev"]}, **{"If-Match": read}
    )
    assert status == 412 and problem["type"] == "urn:lockgate:problem:precondition-failed"
    assert (await seeded.node.services.policy.get_user("carol")).roles == {"dev", "ops"}
    status, _, _ = await _call(
        seeded, "POST", "/users/carol/disable", "admin", {}, **{"If-Match": read}
    )
    assert status == 412 and not (await seeded.node.services.policy.get_user("carol")).disabled
    # Without If-Match an update applies, as before.
    status, changed, _ = await _call(seeded, "POST", "/users/carol/change", "admin", {"roles": []})
    assert status == 200 and changed["roles"] == []


async def test_a_decision_on_a_request_that_changed_is_refused(seeded: Seeded) -> None:
    policy = seeded.node.services.policy
    pending = (await policy.list_requests("alice", pending_only=True))[0]
    status, _, headers = await _call(seeded, "GET", f"/requests/{pending.id}", "approver")
    assert status == 200
    await policy.cancel("alice", pending.id)
    status, problem, _ = await _call(
        seeded,
        "POST",
        f"/requests/{pending.id}/approve",
        "approver",
        {"comment": "ok"},
        **{"If-Match": headers["ETag"]},
    )
    assert status == 412, problem
    assert (await policy.get_request(SYSTEM_ACTOR, pending.id)).state == "cancelled"


async def test_an_undeclared_method_is_405_with_allow(seeded: Seeded) -> None:
    for method, path, allowed in (
        ("DELETE", "/users/alice", {"GET", "HEAD"}),
        ("PUT", "/locks/user/mallory", {"GET", "HEAD", "DELETE"}),
        ("GET", "/requests/x/approve", {"POST"}),
    ):
        status, problem, headers = await _call(seeded, method, path, "admin")
        assert status == 405, (method, path, problem)
        assert set(headers["Allow"].split(",")) == allowed
        assert problem["type"] == "urn:lockgate:problem:method-not-allowed"
