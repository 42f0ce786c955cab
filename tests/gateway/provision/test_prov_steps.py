"""The provisioning commands as values: names Linux accepts, the README's sudoers line, and
only the fixed commands behind sudo."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from gateway.provision import steps

README = Path(__file__).resolve().parents[3] / "README.md"
ALLOWED = {
    steps.USERADD,
    steps.USERDEL,
    steps.USERMOD,
    steps.PKILL,
    steps.INSTALL,
    steps.VISUDO,
    steps.MV,
    steps.RM,
}


def test_account_names_are_valid_linux_names_of_at_most_32_characters() -> None:
    for user in ("alice", "a.very.long_user-name.with.dots-and_more", "x"):
        name = steps.account_name(user, "gr-0123456789ab")
        assert re.fullmatch(r"lg-[a-z0-9-]*[a-z0-9]-[a-z0-9]{8}", name), name
        assert len(name) <= 32
    assert steps.account_name("alice", "gr-aaaa11112222") != steps.account_name(
        "alice", "gr-aaaa11113333"
    )


def test_the_readme_has_the_exact_sudoers_line() -> None:
    assert f"lockgate {steps.SUDOERS_LINE}" in README.read_text()


def test_every_privileged_step_is_one_of_the_fixed_commands() -> None:
    acct = steps.Account(
        "lg-a-1", 50000, ("g",), ("ALL",), "ssh-ed25519 AAAA", "/etc/sudoers.d/lockgate-gr-1", "n"
    )
    all_steps = [
        *steps.create_account(acct),
        *steps.remove_account("lg-a-1", 50000, acct.sudoers, "/var/lib/a", "t"),
        *steps.remove_account("lg-a-1", 50000, acct.sudoers, "", "t"),
        steps.add_groups("p", ["g"]),
        steps.remove_group("p", "g"),
    ]
    for step in all_steps:
        if step.command.startswith("sudo "):
            words = shlex.split(step.command)
            assert words[:2] == ["sudo", "-n"] and words[2] in ALLOWED, step.command
            if words[2] in (steps.MV, steps.RM, steps.VISUDO):
                assert all(
                    w.startswith("/etc/sudoers.d/lockgate-") for w in words[3:] if w.startswith("/")
                )
