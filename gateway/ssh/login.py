"""The SSH login grammar: ``USER+ACCOUNT@TARGET``, ``USER+TARGET``, ``USER``.

``+`` separates the parts because ``scp`` treats ``:`` as a path separator; the client
adds ``@gateway-host`` itself, so the last ``@`` never reaches us.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.errors import LoginError

_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Login:
    user: str
    account: str | None  # None: the target's default account
    target: str | None  # None: the gateway shell

    @property
    def is_shell(self) -> bool:
        return self.target is None


def parse_login(name: str) -> Login:
    user, plus, rest = name.partition("+")
    if not _PART.match(user):
        raise LoginError("user names are letters, digits, '.', '_' and '-'")
    if not plus:
        return Login(user, None, None)
    account, at, target = rest.partition("@")
    if not at:
        account, target = "", rest
    if not _PART.match(target) or (at and not _PART.match(account)):
        raise LoginError("log in as USER+ACCOUNT@TARGET, USER+TARGET or USER")
    return Login(user, account or None, target)


def login_help(name: str) -> str:
    """What to type instead of ``name`` (one line, for a login that does not parse)."""
    shown = "".join(c for c in name[:80] if c.isprintable())
    text = (
        f"lockgate: {shown!r} is not a Lockgate login; log in as USER+ACCOUNT@TARGET "
        "(e.g. alice+root@db01@gateway), USER+TARGET (its default account) or USER (the "
        "gateway shell)"
    )
    user, at, target = name.partition("@")
    if at and "+" not in name and _PART.match(user) and _PART.match(target):
        text += f": did you mean {user}+{target}?"
    return text
