"""Temporary elevation: the person's standing account on the target gets the rule's groups
and sudo for the grant's window, and loses exactly what it was given when the grant ends."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.gateway.provision.conftest import ProvGateway
from tests.nstarget import PERSON


@pytest.fixture
def mode() -> str:
    return "elevate"


async def test_elevation_adds_and_removes_the_group_on_the_existing_account(
    pgw: ProvGateway,
) -> None:
    grant = await pgw.grant()
    assert pgw.target.group_members("lgops") == []
    assert pgw.target.group_members("lgdb") == [PERSON]  # held before the grant
    rc, out, err = await pgw.ssh(
        "alice", f"alice+{PERSON}@db01", "id; sudo -n true && echo sudo-ok"
    )
    assert rc == 0, err
    assert f"({PERSON})" in out and "lgops" in out and "sudo-ok" in out
    [item] = await pgw.items("active")
    assert item.kind == "elevation" and item.added_groups == ("lgops",)
    assert f"lockgate-{grant}" in pgw.target.sudoers_files()

    await pgw.timer.advance(timedelta(hours=1, minutes=1))
    await pgw.settled(item.id, "removed")
    assert pgw.target.group_members("lgops") == []
    assert pgw.target.group_members("lgdb") == [PERSON]  # what it had stays
    assert not [f for f in pgw.target.sudoers_files() if f.startswith("lockgate-")]
    assert PERSON in pgw.target.passwd()
