"""What the gateway runs on a provisioned target, as plain values (no I/O).

Every privileged step is ``sudo -n`` of one of the commands the README's sudoers line
allows, with absolute paths so the line matches exactly; everything else (existence checks,
``getent``, ``stat``) runs as the provisioner itself. Names and arguments come from
``policy.provisioning``'s narrow alphabet and are shell-quoted all the same.

Safety, against the faults peers had:
- a home path that already exists (a planted symlink, a stale directory) is never used:
  creation refuses, nothing is chowned, and ``install -d`` only ever creates; the new home
  is then checked to be a real directory owned by the new UID before anything goes in it;
- the sudoers drop-in is installed under a name sudo ignores (it has a dot), checked with
  ``visudo -c -f`` as root-owned bytes, and renamed into place: sudo never reads a partial
  or unchecked file;
- removal locks the account before killing its processes, so nothing new starts in between,
  kills by UID (a renamed or half-deleted account cannot hide), and deletes the drop-in,
  so a later account of the same name inherits nothing.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

USERADD = "/usr/sbin/useradd"
USERDEL = "/usr/sbin/userdel"
USERMOD = "/usr/sbin/usermod"
PKILL = "/usr/bin/pkill"
INSTALL = "/usr/bin/install"
VISUDO = "/usr/sbin/visudo"
MV = "/usr/bin/mv"
RM = "/usr/bin/rm"
SUDOERS_DIR = "/etc/sudoers.d"
HOME_ROOT = "/home"

# What the target's sudoers needs for the provisioner (README: target-side set-up).
SUDOERS_LINE = (
    f"ALL=(root) NOPASSWD: {USERADD}, {USERDEL}, {USERMOD}, {PKILL}, {INSTALL}, "
    f"{VISUDO} -c -q -f {SUDOERS_DIR}/lockgate-*, {MV} -f {SUDOERS_DIR}/lockgate-*, "
    f"{RM} -f {SUDOERS_DIR}/lockgate-*"
)

_USER_PART = re.compile(r"[^a-z0-9]+")
MAX_NAME = 32


def account_name(user: str, grant_id: str) -> str:
    """``lg-<user>-<short grant id>``: at most 32 characters, lower-case letters, digits and
    '-', starting with a letter, so every Linux useradd accepts it. The grant id part keeps
    two grants of one person apart."""
    short = re.sub(r"[^a-z0-9]", "", grant_id.lower())[-8:] or "0"
    person = _USER_PART.sub("-", user.lower()).strip("-") or "user"
    person = person[: MAX_NAME - len("lg--") - len(short)].rstrip("-")
    return f"lg-{person}-{short}"


def sudoers_file(grant_id: str) -> str:
    return f"{SUDOERS_DIR}/lockgate-{re.sub(r'[^A-Za-z0-9-]', '', grant_id)}"


def sudoers_text(account: str, sudo: Sequence[str], note: str) -> str:
    """The drop-in: no password exists for an ephemeral account, hence NOPASSWD."""
    commands = "ALL" if tuple(sudo) == ("ALL",) else ", ".join(sudo)
    runas = "(ALL:ALL)" if commands == "ALL" else "(root)"
    return f"# {note}\n{account} ALL={runas} NOPASSWD: {commands}\n"


@dataclass(frozen=True)
class Step:
    """One command on the target. ``ok`` lists the exit statuses that mean success;
    ``gone`` those that mean "already not there" (removal is idempotent)."""

    what: str
    command: str
    stdin: bytes | None = None
    ok: frozenset[int] = frozenset({0})
    gone: frozenset[int] = frozenset()
    secret_stdin: bool = False  # never logged


@dataclass(frozen=True)
class Account:
    """An ephemeral account to create."""

    name: str
    uid: int
    groups: tuple[str, ...]
    sudo: tuple[str, ...]
    public_key: str
    sudoers: str
    note: str
    home: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", f"{HOME_ROOT}/{self.name}")


def _q(*words: str) -> str:
    return " ".join(shlex.quote(w) for w in words)


def _sudo(*words: str) -> str:
    return "sudo -n " + _q(*words)


def home_absent(home: str) -> Step:
    return Step("check that the home path is free", f"test ! -e {_q(home)} && test ! -L {_q(home)}")


def useradd(acct: Account) -> Step:
    groups = ["-G", ",".join(acct.groups)] if acct.groups else []
    return Step(
        f"create {acct.name} (uid {acct.uid})",
        _sudo(
            USERADD,
            "-u",
            str(acct.uid),
            "-U",
            "-M",
            "-d",
            acct.home,
            "-s",
            "/bin/bash",
            "-p",
            "*",  # no password can match: key login only, and not "locked" until removal
            "-c",
            acct.note,
            *groups,
            acct.name,
        ),
    )


def make_home(acct: Account) -> list[Step]:
    owner = ["-o", acct.name, "-g", acct.name]
    return [
        Step("create the home", _sudo(INSTALL, "-d", "-m", "0700", *owner, acct.home)),
        Step(
            "check the home is a real directory of the new account",
            f"test ! -L {_q(acct.home)} && "
            f'test "$(stat -c %u:%F -- {_q(acct.home)})" = {_q(f"{acct.uid}:directory")}',
        ),
        Step("create ~/.ssh", _sudo(INSTALL, "-d", "-m", "0700", *owner, acct.home + "/.ssh")),
        Step(
            "install the grant's key",
            _sudo(INSTALL, "-m", "0600", *owner, "/dev/stdin", acct.home + "/.ssh/authorized_keys"),
            stdin=(acct.public_key.strip() + "\n").encode(),
        ),
    ]


def install_sudoers(path: str, text: str) -> list[Step]:
    staged = path + ".new"  # sudo skips drop-ins whose name has a dot
    return [
        Step(
            "stage the sudoers drop-in",
            _sudo(INSTALL, "-m", "0440", "-o", "root", "-g", "root", "/dev/stdin", staged),
            stdin=text.encode(),
        ),
        Step("check the sudoers drop-in", _sudo(VISUDO, "-c", "-q", "-f", staged)),
        Step("move the sudoers drop-in into place", _sudo(MV, "-f", staged, path)),
    ]


def remove_sudoers(path: str) -> list[Step]:
    return [
        Step("remove a staged sudoers drop-in", _sudo(RM, "-f", path + ".new")),
        Step("remove the sudoers drop-in", _sudo(RM, "-f", path)),
    ]


def create_account(acct: Account) -> list[Step]:
    steps = [home_absent(acct.home), useradd(acct), *make_home(acct)]
    if acct.sudo:
        steps += install_sudoers(acct.sudoers, sudoers_text(acct.name, acct.sudo, acct.note))
    return steps


def remove_account(name: str, uid: int | None, sudoers: str, archive: str, tag: str) -> list[Step]:
    """Lock, kill, take away sudo and groups, delete (home archived or deleted). Every
    step tolerates "already gone", so a retry after a partial removal finishes it."""
    no_user = frozenset({6})  # usermod/userdel: no such user
    kill = _sudo(PKILL, "-KILL", "-u", str(uid))
    killer = [Step("kill its processes", kill, ok=frozenset({0, 1}))]
    steps = [
        Step("lock the account", _sudo(USERMOD, "-L", "-e", "1", name), gone=no_user),
        *(killer if uid is not None else []),
        *remove_sudoers(sudoers),
        Step("drop its groups", _sudo(USERMOD, "-G", "", name), gone=no_user),
        *(killer if uid is not None else []),
    ]
    if archive:
        steps += [
            Step("create the home archive", _sudo(INSTALL, "-d", "-m", "0700", archive)),
            Step(
                "archive the home",
                _sudo(USERMOD, "-m", "-d", f"{archive}/{name}-{tag}", name),
                gone=no_user,
            ),
            Step("delete the account", _sudo(USERDEL, name), gone=no_user),
        ]
    else:
        delete = _sudo(USERDEL, "-r", name)
        steps.append(Step("delete the account and its home", delete, gone=no_user))
    return steps


def confirm_account_gone(name: str, uid: int | None, sudoers: str) -> Step:
    """Succeeds only when the name, the UID's processes and the drop-in are all gone."""
    checks = [f"! getent passwd {_q(name)} >/dev/null", f"test ! -e {_q(sudoers)}"]
    if uid is not None:
        checks.append(f"! pgrep -u {uid} >/dev/null")
    return Step("confirm nothing is left", " && ".join(checks))


def current_groups(account: str) -> Step:
    return Step(f"read {account}'s groups", f"id -nG -- {_q(account)}")


def add_groups(account: str, groups: Sequence[str]) -> Step:
    return Step("add the grant's groups", _sudo(USERMOD, "-a", "-G", ",".join(groups), account))


def remove_group(account: str, group: str) -> Step:
    # usermod exits 6 when the user or group is gone; either way the membership is.
    return Step(
        f"remove {account} from {group}",
        _sudo(USERMOD, "-r", "-G", group, account),
        gone=frozenset({6}),
    )


def confirm_elevation_gone(account: str, groups: Sequence[str], sudoers: str) -> Step:
    checks = [f"test ! -e {_q(sudoers)}"]
    for group in groups:
        member = f"id -nG -- {_q(account)} 2>/dev/null | tr ' ' '\\n' | grep -qx {_q(group)}"
        checks.append(f"! {member}")
    return Step("confirm the elevation is gone", " && ".join(checks))


def list_accounts() -> Step:
    """``name:uid`` of every ``lg-`` account (as the provisioner: /etc/passwd is public)."""
    return Step("list lg- accounts", "getent passwd | awk -F: '$1 ~ /^lg-/ {print $1\":\"$3}'")


def list_dropins() -> Step:
    return Step("list lockgate- drop-ins", f"ls -1 {SUDOERS_DIR} | grep '^lockgate-' || true")


ORPHAN = re.compile(r"^lg-[a-z0-9-]+-[a-z0-9]{1,8}$")
