"""What a rule and a target say about provisioned accounts, validated before anything can
reach a root command on a target."""

from __future__ import annotations

import pytest

from policy.errors import InvalidInput
from policy.provisioning import parse_home_archive, parse_sudo, parse_uid_range
from policy.rules import parse_rule


def test_a_rule_carries_groups_and_sudo() -> None:
    rule = parse_rule({"name": "ops", "roles": ["dev"], "groups": ["docker"], "sudo": "ALL"})
    assert rule.groups == ("docker",) and rule.sudo == ("ALL",)
    listed = parse_rule(
        {"name": "r", "roles": ["dev"], "sudo": "/usr/bin/systemctl restart nginx, /usr/bin/id"}
    )
    assert listed.sudo == ("/usr/bin/systemctl restart nginx", "/usr/bin/id")
    assert parse_rule({"name": "n", "roles": ["dev"]}).sudo == ()


@pytest.mark.parametrize(
    "sudo",
    [
        "ALL, /usr/bin/id",
        "usr/bin/id",
        "/usr/bin/id; rm -rf /",
        "/usr/bin/vi *",
        "/usr/bin/a\n/usr/bin/b",
        "/bin/sh -c 'x'",
        "/usr/bin/tee /etc/sudoers.d/x:y",
        ["/usr/bin/id", 3],
    ],
)
def test_sudo_entries_are_plain_absolute_commands(sudo: object) -> None:
    with pytest.raises(InvalidInput):
        parse_sudo(sudo)


@pytest.mark.parametrize("groups", [["Docker"], ["a b"], ["-x"], "docker", ["x" * 40]])
def test_group_names_are_what_useradd_accepts(groups: object) -> None:
    with pytest.raises(InvalidInput):
        parse_rule({"name": "r", "roles": ["dev"], "groups": groups})


def test_uid_ranges_and_home_archives() -> None:
    assert parse_uid_range("50000-59999") == (50000, 59999)
    for bad in ("10-20", "60000-50000", "a-b", "50000"):
        with pytest.raises(InvalidInput):
            parse_uid_range(bad)
    assert parse_home_archive("/var/lib/homes/") == "/var/lib/homes"
    assert parse_home_archive("") == ""
    for bad in ("relative", "/a/../etc", "/a b"):
        with pytest.raises(InvalidInput):
            parse_home_archive(bad)
