"""The command line as an operator uses it: init, users, targets, credentials, the request and
approval flow, revocation, the audit chain — and the plaintext credential nowhere."""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from gateway.cli.main import main
from policy.tokens import TOKEN
from tests.conftest import DB_KINDS, PG_URL

PLAINTEXT = "Pl41ntext-Cr3dential-7d1f0c"
RULES = """
[[rules]]
name = "dev-prod"
roles = ["dev"]
targets = ["db*"]
labels = { env = "prod" }
max_duration = "4h"
default_duration = "1h"
approvals = 2
approver_roles = ["approver"]
"""


@dataclass
class Cli:
    config: Path
    db_url: str
    outputs: list[str]

    def __call__(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        saved = sys.stdin
        sys.stdin = io.StringIO(stdin)
        try:
            code = main([*argv, "--config", str(self.config)], out=out, err=err)
        finally:
            sys.stdin = saved
        self.outputs += [out.getvalue(), err.getvalue()]
        return code, out.getvalue(), err.getvalue()

    def json(self, *argv: str, stdin: str = "") -> object:
        code, out, err = self(*argv, "--json", stdin=stdin)
        assert code == 0, err
        return json.loads(out)


async def _pg(action: str, name: str) -> None:
    admin = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    async with admin.connect() as conn:
        sql = (
            f'CREATE DATABASE "{name}"'
            if action == "create"
            else (f'DROP DATABASE "{name}" WITH (FORCE)')
        )
        await conn.execute(sa.text(sql))
    await admin.dispose()


@pytest.fixture(params=DB_KINDS)
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    config = tmp_path / "lockgate.toml"
    if request.param == "sqlite":
        db_url = ""
    else:
        name = f"lg_{uuid.uuid4().hex[:12]}"
        asyncio.run(_pg("create", name))
        db_url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    env_key = "LOCKGATE_DATABASE_URL"
    old = os.environ.pop(env_key, None)
    if db_url:
        os.environ[env_key] = db_url
    try:
        c = Cli(config, db_url, [])
        code, _, err = c("init", "--data-dir", "data")
        assert code == 0, err
        with config.open("a") as f:
            f.write(RULES)
        yield c
    finally:
        os.environ.pop(env_key, None)
        if old is not None:
            os.environ[env_key] = old
        if request.param != "sqlite":
            asyncio.run(_pg("drop", make_url(db_url).database or ""))


def _ssh_key(tmp_path: Path, name: str) -> Path:
    key = asyncssh.generate_private_key("ssh-ed25519")
    path = tmp_path / f"{name}.pub"
    path.write_bytes(key.export_public_key())
    return path


async def _all_db_text(url: str) -> str:
    engine = create_async_engine(url, poolclass=NullPool)
    chunks: list[str] = []
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
        for name in names:
            rows = (await conn.execute(sa.text(f'SELECT * FROM "{name}"'))).all()
            chunks.extend(repr(tuple(r)) for r in rows)
    await engine.dispose()
    return "\n".join(chunks)


def test_operator_flow_end_to_end(cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert stat.S_IMODE((data / "master.key").stat().st_mode) == 0o600
    assert (data / "ssh_host_ed25519_key").exists()

    alice_key = _ssh_key(tmp_path, "alice")
    assert (
        cli.json("user", "add", "alice", "--role", "dev", "--key", str(alice_key))["name"]
        == "alice"
    )
    bob = cli.json(
        "user",
        "add",
        "bob",
        "--role",
        "approver",
        "--password-stdin",
        stdin="bob's long passphrase\n",
    )
    assert bob["has_password"] is True
    assert "passphrase" not in json.dumps(bob)
    cli.json("user", "add", "carol", "--role", "approver")
    users = cli.json("user", "list")
    assert sorted(u["name"] for u in users) == ["alice", "bob", "carol"]

    host_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    target = cli.json(
        "target",
        "add",
        "db01",
        "--host",
        "127.0.0.1",
        "--port",
        "2200",
        "--account",
        "root",
        "--label",
        "env=prod",
        "--host-key",
        " ".join(host_key.split()[:2]),
    )
    assert target["default_account"] in (None, "root")
    info = cli.json("credential", "set", "db01", "root", "--password-stdin", stdin=PLAINTEXT + "\n")
    assert info["kind"] == "password"

    req = cli.json(
        "request",
        "db01",
        "--account",
        "root",
        "--for",
        "1h",
        "--reason",
        "INC-4711 disk full",
        "--as",
        "alice",
    )
    assert req["state"] == "pending"

    code, _, err = cli("approve", req["id"], "--as", "alice")
    assert code == 1 and err.startswith("lockgate: ") and err.count("\n") == 1
    assert "self" in err.lower()

    first = cli.json("approve", req["id"], "--as", "bob", "--comment", "looks right")
    assert first["state"] == "pending"
    code, _, err = cli("approve", req["id"], "--as", "bob")
    assert code == 1, "the same approver must not count twice"
    done = cli.json("approve", req["id"], "--as", "carol")
    assert done["state"] == "approved" and done["grant_id"]

    grants = cli.json("grants", "--active", "--as", "alice")
    assert [g["id"] for g in grants] == [done["grant_id"]]
    assert cli.json("grants", "--active", "--as", "bob") == [] or all(
        g["user"] == "alice" for g in cli.json("grants", "--active", "--as", "bob")
    )

    revoked = cli.json("revoke", done["grant_id"], "--reason", "work finished")
    assert revoked["revoked_at"]
    assert cli.json("grants", "--active", "--as", "alice") == []

    code, _, err = cli("audit", "verify")
    assert code == 0, err
    events = cli.json("audit")
    actions = [e["action"] for e in events]
    assert len(actions) >= 8
    assert any("revoke" in a for a in actions)
    # The refused self-approval left its trace, with the true reason.
    refused = [e for e in events if e["action"] == "cli.refused"]
    assert [(e["actor"], e["subject"]) for e in refused] == [("alice", "approve")]
    assert "self-approval" in refused[0]["details"]["reason"]

    # The plaintext credential is in no file under the data directory, no output, no row.
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert PLAINTEXT.encode() not in path.read_bytes(), path
    assert not any(PLAINTEXT in text for text in cli.outputs)
    url = cli.db_url or f"sqlite+aiosqlite:///{data / 'lockgate.db'}"
    assert PLAINTEXT not in asyncio.run(_all_db_text(url))


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["request", "db01", "--for", "forever", "--reason", "x", "--as", "alice"], 2),
        (["request", "nosuch", "--for", "1h", "--reason", "x", "--as", "alice"], 1),
        (["approve", "no-such-request"], 1),
        (["revoke", "no-such-grant", "--reason", "x"], 1),
        (["user", "add", "bad name!"], 2),
        (["user", "show", "nobody"], 1),
        (["target", "add", "t1"], 2),
        (["target", "add", "t1", "--host", "h", "--url", "http://x"], 2),
        (["target", "add", "t1", "--host", "h", "--host-key", "not a key"], 2),
        (["target", "add", "t1", "--host", "h", "--label", "novalue"], 2),
        (["credential", "set", "nosuch", "root", "--password-stdin"], 1),
        (["credential", "set", "db01", "root", "--header", "X-Token"], 2),
        (["lock", "user", "alice", "--reason", "x", "--for", "-5m"], 2),
        (["deny", "x"], 2),
        (["frobnicate"], 2),
        (["grants", "--as", "nobody"], 1),
        (["user", "add", "eve", "--as", "alice"], 1),
        (["token", "create", "nobody"], 1),
        (["user", "add", "eve", "--key", "/nonexistent.pub"], 2),
    ],
)
def test_bad_input_is_one_line_and_nonzero(cli: Cli, argv: list[str], code: int) -> None:
    cli.json("user", "add", "alice", "--role", "dev")
    cli.json(
        "target", "add", "db01", "--host", "127.0.0.1", "--account", "root", "--label", "env=prod"
    )
    got, out, err = cli(*argv)
    assert got == code, (argv, got, err)
    assert err.startswith("lockgate: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err + out


@pytest.mark.parametrize("account", ["../../etc/passwd", "ro\x00ot", "<b>x</b>", "nobody"])
def test_credential_set_refuses_an_account_the_target_has_not(cli: Cli, account: str) -> None:
    cli.json("target", "add", "db01", "--host", "127.0.0.1", "--account", "root")
    got, out, err = cli("credential", "set", "db01", account, "--password-stdin", stdin="pw\n")
    assert got != 0 and err.startswith("lockgate: ") and err.count("\n") == 1, err
    assert "account" in err and "Traceback" not in err + out
    assert cli.json("credential", "list") == []


def test_token_shown_once_and_stored_hashed(cli: Cli, tmp_path: Path) -> None:
    cli.json("user", "add", "alice", "--role", "admin")
    created = cli.json("token", "create", "alice", "--for", "1d")
    token = created["token"]
    assert len(token) >= 32
    url = cli.db_url or f"sqlite+aiosqlite:///{tmp_path / 'data' / 'lockgate.db'}"
    assert token not in asyncio.run(_all_db_text(url))
    # The secret itself may contain "_", so split with the token grammar, not on the last "_".
    match = TOKEN.match(token)
    assert match is not None
    secret_part = match.group(2)
    assert secret_part not in asyncio.run(_all_db_text(url))


def test_locks_and_unlock(cli: Cli) -> None:
    cli.json("user", "add", "alice", "--role", "dev")
    lock = cli.json("lock", "user", "alice", "--reason", "suspicious", "--for", "30m")
    assert lock["name"] == "alice"
    assert [x["name"] for x in cli.json("locks")] == ["alice"]
    cli.json("unlock", "user", "alice")
    assert cli.json("locks") == []


def test_refuses_to_start_without_master_key(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "data" / "master.key").unlink()
    code, _, err = cli("user", "list")
    assert code == 1
    assert "vault" in err and err.count("\n") == 1


def test_refuses_world_readable_master_key(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "data" / "master.key").chmod(0o644)
    code, _, err = cli("user", "list")
    assert code == 1 and "vault" in err


def test_console_script_never_prints_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nnope = 1\n")
    for argv in (
        ["user", "list", "--config", str(bad)],
        ["user", "list", "--config", str(tmp_path / "missing.toml")],
        ["approve"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "gateway", *argv], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.startswith("lockgate: ")


def test_vault_rotate(cli: Cli, tmp_path: Path) -> None:
    cli.json("target", "add", "db01", "--host", "127.0.0.1", "--account", "root")
    cli.json("credential", "set", "db01", "root", "--password-stdin", stdin=PLAINTEXT + "\n")
    old_id = (tmp_path / "data" / "master.key").read_text().split(":")[1]
    result = cli.json("vault", "rotate")
    assert result["retired"] == old_id and result["credentials"] == 1
    text = (tmp_path / "data" / "master.key").read_text()
    assert old_id not in text and result["key_id"] in text and text.count("\n") == 1
    assert stat.S_IMODE((tmp_path / "data" / "master.key").stat().st_mode) == 0o600
    creds = cli.json("credential", "list")
    assert [c["key_id"] for c in creds] == [result["key_id"]]

    async def checkout() -> str:
        from gateway.config import load_config
        from gateway.services import open_services

        services = await open_services(load_config(cli.config))
        try:
            out = await services.vault.checkout("db01", "root", "s", "test")
            return out.secret.reveal_text()
        finally:
            await services.aclose()

    assert asyncio.run(checkout()) == PLAINTEXT
    code, _, _ = cli("audit", "verify")
    assert code == 0
