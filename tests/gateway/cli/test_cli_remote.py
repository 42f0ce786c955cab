"""``lockgate`` with LOCKGATE_URL and LOCKGATE_TOKEN: the same output and exit status as on
the gateway host, through the real HTTP API."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from tests.gateway.web.conftest import Web
from tests.target import TARGET_USER


async def lockgate(env: dict[str, str], *argv: str, stdin: str = "") -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 120)
    return proc.returncode or 0, out.decode(), err.decode()


def host_env(web: Web) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    env["LOCKGATE_SERVER_DATA_DIR"] = str(web.node.config.server.data_dir)
    env["LOCKGATE_DATABASE_URL"] = web.node.config.database_url
    return env


def remote_env(web: Web, role: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    env["LOCKGATE_URL"] = web.base
    env["LOCKGATE_TOKEN"] = web.tokens[role]
    return env


async def test_same_output_as_on_the_host(web: Web) -> None:
    await web.grant("requester")
    await web.policy.create_request(
        "alice", "db01", account=TARGET_USER, reason="INC-9 pending", duration=None
    )
    for argv in (
        ("requests",),
        ("grants", "--active"),
        ("target", "list"),
        ("target", "show", "db01"),
        ("user", "show", "alice"),
        ("sessions",),
        ("locks",),
        ("requests", "--json"),
    ):
        here = await lockgate(host_env(web), *argv, "--as", "alice")
        there = await lockgate(remote_env(web, "requester"), *argv)
        assert here[0] == there[0] == 0, (argv, here, there)
        assert here[1] == there[1], argv
    for argv in (("audit", "--since", "1h"), ("user", "list"), ("credential", "list")):
        here = await lockgate(host_env(web), *argv, "--as", "ada")
        there = await lockgate(remote_env(web, "admin"), *argv)
        assert here[0] == there[0] == 0, (argv, here, there)
        if argv[0] != "audit":  # the remote call itself adds nothing, but time passes
            assert here[1] == there[1], argv


async def test_remote_actions_and_exit_status(web: Web) -> None:
    alice, bob = remote_env(web, "requester"), remote_env(web, "approver")
    code, out, err = await lockgate(
        alice, "request", "db01", "--for", "20m", "--reason", "INC-10 disk", "--json"
    )
    assert code == 0, err
    request = json.loads(out)
    assert request["state"] == "pending"
    code, out, err = await lockgate(alice, "approve", request["id"])
    assert code == 1 and err.startswith("lockgate: ") and "own" in err
    code, out, err = await lockgate(bob, "approve", request["id"], "--comment", "ok", "--json")
    assert code == 0 and json.loads(out)["state"] == "approved"
    code, out, err = await lockgate(alice, "request", "db01", "--for", "soon", "--reason", "x")
    assert code == 2 and "duration" in err
    code, out, err = await lockgate(alice, "revoke", "gr-nope", "--reason", "x")
    assert code == 1 and "no grant gr-nope" in err
    code, out, err = await lockgate(alice, "vault", "rotate")
    assert code == 2 and "gateway host only" in err
    code, out, err = await lockgate(alice, "grants", "--as", "bob")
    assert code == 2 and "--as" in err
    code, out, err = await lockgate(alice, "terminate", "se-x", "--reason", "r")
    assert code == 1
    code, out, err = await lockgate(alice, "token", "create", "alice")
    assert code == 0 and out.startswith("lgt_") and "shown once" in err
    bad = {**alice, "LOCKGATE_TOKEN": "lgt_bad_token"}
    code, out, err = await lockgate(bad, "grants")
    assert code == 1 and "token" in err
    for text in (out, err):
        assert "lgt_bad_token" not in text
    nowhere = {**alice, "LOCKGATE_URL": "http://127.0.0.1:9"}
    code, out, err = await lockgate(nowhere, "grants")
    assert code == 1 and "cannot reach" in err and web.tokens["requester"] not in err


async def test_a_remote_listing_follows_every_page(web: Web) -> None:
    for i in range(130):  # more than one page of the API's default 100
        await web.node.services.audit.record(actor="ada", action="test.page", subject=f"s{i}")
    code, out, err = await lockgate(remote_env(web, "auditor"), "audit", "--json")
    assert code == 0, err
    subjects = [e["subject"] for e in json.loads(out) if e["action"] == "test.page"]
    assert sorted(subjects) == sorted(f"s{i}" for i in range(130))


async def test_a_remote_terminate_shows_the_session_as_it_ended(web: Web) -> None:
    proc, session_id = await web.live_session()
    code, out, err = await lockgate(
        remote_env(web, "admin"), "terminate", session_id, "--reason", "from afar", "--json"
    )
    assert code == 0 and err == "", err
    ended = json.loads(out)
    assert ended["id"] == session_id and ended["ended_at"] is not None
    assert "from afar" in ended["end_reason"]
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert b"[lockgate] session terminated: " in stderr
