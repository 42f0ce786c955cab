"""The command line for provisioned targets: mode, UID range and home archive on target
add/set, the provisioner key (write-only, never a session's credential), and bad input
refused in one line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.gateway.cli.test_cli_flow import Cli, cli  # noqa: F401  (fixture)

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def test_target_provisioning_from_the_command_line(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    code, out, err = cli(
        "target", "add", "db01", "--host", "10.0.0.5", "--host-key", HOST_KEY,
        "--provision", "ephemeral", "--uid-range", "61000-61099", "--json",
    )  # fmt: skip
    assert code == 0, err
    target = json.loads(out)
    assert target["provision"] == "ephemeral" and target["uid_min"] == 61000
    assert target["default_account"] == "ephemeral"

    code, out, err = cli("target", "set", "db01", "--home-archive", "/var/lib/lg-homes", "--json")
    assert code == 0, err
    assert json.loads(out)["home_archive"] == "/var/lib/lg-homes"
    assert json.loads(out)["provision"] == "ephemeral"

    code, _, err = cli("target", "set", "db01", "--uid-range", "99-10")
    assert code == 2 and err.startswith("lockgate: ") and "uid range" in err
    code, _, err = cli("target", "set", "db01", "--home-archive", "../x")
    assert code == 2 and "home archive" in err
    code, _, err = cli("target", "set", "db01")
    assert code == 2

    key = tmp_path / "prov"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    code, out, err = cli(
        "credential", "set", "db01", "lgprov", "--provisioner", "--private-key", str(key), "--json"
    )
    assert code == 0, err
    info = json.loads(out)
    assert info["kind"] == "provisioner" and info["public"] == {"username": "lgprov"}
    secret = key.read_text().splitlines()[1]
    assert all(secret not in o for o in cli.outputs)
    code, _, err = cli("credential", "set", "db01", "--provisioner", "--password-stdin", stdin="x")
    assert code == 2 and "--private-key" in err

    code, out, err = cli("provisioned", "--target", "db01", "--json")
    assert code == 0, err
    assert json.loads(out) == []
    code, _, err = cli("target", "set", "db01", "--provision", "elevate")
    assert code == 0, err
