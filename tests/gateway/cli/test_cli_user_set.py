"""``lockgate user set``: a user made with a password and no TOTP (the tour's bob) gets a
second factor and then signs in to the web UI; roles, keys, enable and the password change
afterwards, on the gateway host and through the API — the real CLI against a real node."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.gateway.cli.test_cli_remote import host_env, lockgate, remote_env
from tests.gateway.web.conftest import Web
from vault import totp


async def _sign_in(web: Web, user: str, password: str, code: str) -> bool:
    async with web.http.post(
        web.base + "/login",
        data={"user": user, "password": password, "code": code, "next": "/"},
        headers={"Origin": web.base},
        allow_redirects=False,
    ) as response:
        return response.status == 303 and "Set-Cookie" in response.headers


def _seed(text: str) -> bytes:
    uri = next(word for word in text.split() if word.startswith("otpauth://"))
    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    return base64.b32decode(secret + "=" * (-len(secret) % 8))


async def test_user_set_gives_bob_a_second_factor_and_changes_the_rest(
    web: Web, tmp_path: Path
) -> None:
    host = host_env(web)
    password = "a long passphrase"
    code, _, err = await lockgate(
        host, "user", "add", "bobby", "--role", "approver", "--password-stdin", stdin=password
    )
    assert code == 0, err
    assert not await _sign_in(web, "bobby", password, "000000")  # no TOTP: no web sign-in

    code, out, err = await lockgate(host, "user", "set", "bobby", "--totp", "--json")
    assert code == 0, err
    assert json.loads(out)["totp_enabled"] is True
    seed = _seed(err)
    assert "otpauth://" not in out  # shown once, on the admin's terminal (stderr) only
    assert await _sign_in(web, "bobby", password, totp.code_at(seed, datetime.now(UTC)))

    key = tmp_path / "id_bobby"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    code, out, err = await lockgate(
        host, "user", "set", "bobby", "--role", "approver", "--role", "auditor",
        "--add-key", f"{key}.pub", "--json",
    )  # fmt: skip
    assert code == 0, err
    changed = json.loads(out)
    assert changed["roles"] == ["approver", "auditor"] and len(changed["public_keys"]) == 1
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{key}.pub"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    code, out, err = await lockgate(
        host, "user", "set", "bobby", "--remove-key", fingerprint, "--json"
    )
    assert code == 0, err
    assert json.loads(out)["public_keys"] == []

    assert (await lockgate(host, "user", "disable", "bobby"))[0] == 0
    code, out, err = await lockgate(host, "user", "set", "bobby", "--enable", "--json")
    assert code == 0 and json.loads(out)["disabled"] is False, err

    # through the API: roles and a new password; the enrolment only on the host
    admin = remote_env(web, "admin")
    code, out, err = await lockgate(
        admin, "user", "set", "bobby", "--role", "dev", "--password-stdin", "--json",
        stdin="another long passphrase",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["roles"] == ["dev"]
    later = datetime.now(UTC) + timedelta(seconds=30)  # a code is good once: the next one
    assert await _sign_in(web, "bobby", "another long passphrase", totp.code_at(seed, later))
    code, _, err = await lockgate(admin, "user", "set", "bobby", "--totp")
    assert code == 2 and "gateway host" in err

    events = [e for e in await web.node.services.audit.events() if e.subject == "bobby"]
    assert "user.change" in [e.action for e in events]
    texts = json.dumps([e.details for e in events])
    assert password not in texts and "another long passphrase" not in texts

    for argv, status, says in (
        (("user", "set", "bobby"), 2, "needs at least one of"),
        (("user", "set", "nobody", "--enable"), 1, "no user nobody"),
        (("user", "set", "bobby", "--remove-key", "SHA256:nope"), 1, "has no key"),
        (("user", "set", "bobby", "--enable", "--as", "alice"), 1, "may not change users"),
    ):
        code, _, err = await lockgate(host, *argv)
        assert code == status and says in err and err.count("\n") == 1, (argv, err)


async def test_request_wait_through_the_api(web: Web) -> None:
    """``request --wait`` from anywhere: the waiting line at once, then the decision."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway",
        "request", "db01", "--for", "20m", "--reason", "INC-11 remote wait", "--wait", "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=remote_env(web, "requester"),
    )  # fmt: skip
    assert proc.stderr is not None
    line = await asyncio.wait_for(proc.stderr.readline(), 60)
    assert b"is pending approval; waiting" in line, line
    [pending] = await web.policy.list_requests("alice", pending_only=True, mine_only=True)
    await web.policy.approve("bob", pending.id, "go")
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0 and json.loads(out)["state"] == "approved"
