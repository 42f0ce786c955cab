from __future__ import annotations

import pytest

from gateway.errors import LoginError
from gateway.ssh.login import Login, parse_login


@pytest.mark.parametrize(
    ("name", "login"),
    [
        ("alice", Login("alice", None, None)),
        ("alice+db01", Login("alice", None, "db01")),
        ("alice+root@db01", Login("alice", "root", "db01")),
        ("a.b_c-d+post-gres@db-01.prod", Login("a.b_c-d", "post-gres", "db-01.prod")),
    ],
)
def test_grammar(name: str, login: Login) -> None:
    assert parse_login(name) == login


@pytest.mark.parametrize(
    "name",
    [
        "",
        "+db01",
        "alice+",
        "alice+@db01",
        "alice+root@",
        "al ice",
        "alice+root@db01@x",
        "alice+ro:ot@db01",
        "-alice",
        "a" * 70,
    ],
)
def test_rejects(name: str) -> None:
    with pytest.raises(LoginError):
        parse_login(name)
