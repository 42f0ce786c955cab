"""``lockgate auth test-mapping`` (the dry run of the claims-to-roles mapping) and
``lockgate credential set --oidc`` (the client secret, write-only)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.gateway.cli.test_cli_flow import Cli, cli

__all__ = ["cli"]  # the fixture, re-exported for this module

SECRET = "idp-client-secret-0c4e1d"
CORP = """
[[auth.oidc]]
name = "corp"
issuer = "https://idp.example.com"
client_id = "lockgate"
role_mappings = { "sre-*" = ["dev"], "sec-approvers" = ["approver"], "/^admins-(eu|us)$/" = [
  "admin",
] }
"""


def _claims(tmp_path: Path, claims: object) -> str:
    path = tmp_path / "claims.json"
    path.write_text(json.dumps(claims))
    return str(path)


def test_test_mapping_prints_the_user_and_roles_claims_would_get(cli: Cli, tmp_path: Path) -> None:
    with cli.config.open("a") as f:
        f.write(CORP)
    claims = {
        "sub": "x1",
        "preferred_username": "Alice",
        "email_verified": True,
        "groups": ["sre-db", "admins-eu", "admins-asia", "sec-approvers-old"],
    }
    result = cli.json(
        "auth", "test-mapping", "--provider", "corp", "--claims", _claims(tmp_path, claims)
    )
    assert result == {
        "provider": "corp",
        "user": "alice",
        "groups": claims["groups"],
        "roles": ["admin", "dev"],
        "removed_if_held": ["approver"],
        "refused": None,
    }
    code, out, _ = cli(
        "auth", "test-mapping", "--provider", "corp", "--claims", _claims(tmp_path, claims)
    )
    assert code == 0 and "roles" in out and "dev" in out
    # refusals exit 1 and say why; it changes nothing
    unverified = {**claims, "email_verified": False}
    code, out, _ = cli(
        "auth", "test-mapping", "--provider", "corp", "--claims", _claims(tmp_path, unverified)
    )
    assert code == 1 and "not verified" in out
    code, _, err = cli(
        "auth", "test-mapping", "--provider", "nope", "--claims", _claims(tmp_path, claims)
    )
    assert code == 2 and err.startswith("lockgate: no [[auth.oidc]] provider named 'nope'")
    code, _, err = cli(
        "auth", "test-mapping", "--provider", "corp", "--claims", str(tmp_path / "none.json")
    )
    assert code == 2 and "cannot read" in err
    assert cli.json("user", "list") == []


def test_the_client_secret_is_set_write_only(cli: Cli) -> None:
    with cli.config.open("a") as f:
        f.write(CORP)
    info = cli.json("credential", "set", "--oidc", "corp", stdin=SECRET + "\n")
    assert info["kind"] == "oidc_client_secret" and info["account"] == "corp"
    assert SECRET not in json.dumps(cli.json("credential", "list"))
    code, _, err = cli("credential", "set", "--oidc", "other", stdin=SECRET + "\n")
    assert code == 2 and "no [[auth.oidc]] provider named 'other'" in err
    code, _, err = cli("credential", "set", "db01", stdin="x\n")
    assert code == 2 and err.startswith("lockgate: ")
    assert not any(SECRET in text for text in cli.outputs)
