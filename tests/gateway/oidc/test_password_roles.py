"""``auth.password_login_roles``: once people sign in through the identity provider, a local
password signs in only the roles kept for break-glass, on the web and over SSH alike."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest

from policy.service import SYSTEM_ACTOR
from tests.gateway.web.conftest import _seed
from tests.nodes import start_test_node
from vault import totp

PASSWORD = "a long passphrase 93"


async def test_only_listed_roles_sign_in_with_a_password(db_url: str, tmp_path: Path) -> None:
    node = await start_test_node(
        db_url, tmp_path, name="pw-roles", password_login_roles=frozenset({"breakglass"})
    )
    try:
        policy, vault = node.services.policy, node.services.vault
        seeds = {}
        for name, roles in (("ada", ["admin", "breakglass"]), ("alice", ["dev"])):
            await policy.add_user(SYSTEM_ACTOR, name, roles=roles, password=PASSWORD)
            seeds[name] = _seed(await vault.enroll_totp(SYSTEM_ACTOR, name))
            await policy.set_totp_enabled(SYSTEM_ACTOR, name, True)
        await policy.add_user(SYSTEM_ACTOR, "bob", roles=["dev"], password=PASSWORD)  # no TOTP
        assert node.deps is not None
        signin = node.deps.signin
        now = policy.now()
        assert (
            await signin.attempt("ada", PASSWORD, totp.code_at(seeds["ada"], now), "t") is not None
        )
        assert (
            await signin.attempt("alice", PASSWORD, totp.code_at(seeds["alice"], now), "t") is None
        )

        async def ssh_password(user: str) -> bool:
            try:
                conn = await asyncssh.connect(
                    "127.0.0.1",
                    node.ssh_port,
                    username=user,
                    password=PASSWORD,
                    known_hosts=None,
                    client_keys=None,
                    preferred_auth="password",
                )
            except asyncssh.PermissionDenied:
                return False
            conn.close()
            return True

        assert not await ssh_password("bob")  # needs no TOTP, but may not use a password
        failures = [e for e in await node.services.audit.events() if e.action == "auth.failure"]
        assert {e.subject for e in failures} >= {"alice", "bob"}
    finally:
        await node.stop()


@pytest.mark.parametrize("roles", [frozenset(), frozenset({"dev"})])
async def test_without_the_setting_or_with_the_role_a_password_still_works(
    db_url: str, tmp_path: Path, roles: frozenset[str]
) -> None:
    node = await start_test_node(db_url, tmp_path, name="pw-all", password_login_roles=roles)
    try:
        await node.services.policy.add_user(SYSTEM_ACTOR, "bob", roles=["dev"], password=PASSWORD)
        conn = await asyncssh.connect(
            "127.0.0.1",
            node.ssh_port,
            username="bob",
            password=PASSWORD,
            known_hosts=None,
            client_keys=None,
            preferred_auth="password",
        )
        conn.close()
    finally:
        await node.stop()
