"""What a provisioned target and a rule say about accounts on the target (pure validation).

A target's ``provision`` mode is ``none`` (the vaulted credential is used as it is),
``ephemeral`` (an account is created on the target for each grant and deleted after it) or
``elevate`` (the person's mapped account gets the rule's groups and sudo for the grant's
window). A rule's ``groups`` and ``sudo`` say what the ephemeral or elevated account gets.
Everything here ends up in commands run as root on a target, so the accepted alphabet is
narrow: names that useradd accepts, absolute command paths without sudoers metacharacters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from policy.errors import InvalidInput

ProvisionMode = Literal["none", "ephemeral", "elevate"]
PROVISION_MODES: tuple[str, ...] = ("none", "ephemeral", "elevate")
# The account name grants and requests use on an ephemeral target when none is declared.
EPHEMERAL_ACCOUNT = "ephemeral"
DEFAULT_UID_RANGE = (50000, 59999)

GROUP = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# An absolute command with plain arguments: no sudoers metacharacters (, : = \ ! # " '),
# no wildcards and no newline, so one entry can never widen into another.
_COMMAND = re.compile(r"^/[A-Za-z0-9_./+-]+( [A-Za-z0-9_./+@%-]+)*$")
_ARCHIVE = re.compile(r"^/[A-Za-z0-9_./-]{1,200}$")


@dataclass(frozen=True)
class Provisioning:
    """A target's provisioning settings."""

    mode: ProvisionMode = "none"
    uid_min: int = DEFAULT_UID_RANGE[0]
    uid_max: int = DEFAULT_UID_RANGE[1]
    home_archive: str = ""  # where an ephemeral home is moved at removal; "" = deleted


def parse_mode(value: str) -> ProvisionMode:
    if value not in PROVISION_MODES:
        raise InvalidInput("provision must be none, ephemeral or elevate")
    return value  # type: ignore[return-value]


def parse_uid_range(text: str) -> tuple[int, int]:
    """``"A-B"``: the UIDs ephemeral accounts on a target get, 1000 <= A <= B < 2^31."""
    match = re.fullmatch(r"(\d{1,10})-(\d{1,10})", text.strip())
    if not match:
        raise InvalidInput("uid range must read A-B, e.g. 50000-59999")
    low, high = int(match[1]), int(match[2])
    if not 1000 <= low <= high < 2**31 - 1:
        raise InvalidInput("uid range must lie within 1000-2147483646 with A <= B")
    return low, high


def parse_home_archive(text: str) -> str:
    """An absolute directory without ``..`` (ephemeral homes are moved into it), or ""."""
    if not text:
        return ""
    if not _ARCHIVE.match(text) or ".." in text.split("/"):
        raise InvalidInput("home archive must be an absolute path of plain characters")
    return text.rstrip("/") or "/"


def parse_groups(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
        raise InvalidInput("groups must be a list of group names")
    for group in value:
        if not GROUP.match(group):
            raise InvalidInput(f"groups: {group!r} is not a valid group name")
    return tuple(dict.fromkeys(value))


def parse_sudo(value: Any) -> tuple[str, ...]:
    """``"ALL"``, ``""`` (none), a comma-separated string or a list of absolute commands."""
    if isinstance(value, str):
        items: Sequence[Any] = [c.strip() for c in value.split(",")] if value.strip() else []
    elif isinstance(value, list):
        items = value
    else:
        raise InvalidInput('sudo must be "ALL", a command or a list of commands')
    commands: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidInput("sudo: commands must be strings")
        if item == "ALL":
            commands.append(item)
            continue
        if not _COMMAND.match(item) or len(item) > 200:
            raise InvalidInput(f"sudo: {item!r} must be an absolute command with plain arguments")
        commands.append(item)
    if "ALL" in commands and len(commands) > 1:
        raise InvalidInput('sudo: "ALL" stands alone')
    return tuple(dict.fromkeys(commands))
