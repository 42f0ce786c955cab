"""A provisioned SSH target for the tests: a real sshd in its own mount and PID namespace
(``unshare`` from util-linux), so that the gateway's useradd/userdel/usermod/visudo change a
private copy of /etc, /home and /var/log and pkill sees only the namespace's processes: the
test machine's own accounts are never touched.

The namespace shares the host's network (the gateway reaches it on loopback). Its state
lives in a directory on the host, so stopping the target (the namespace dies with its sshd)
and starting it again brings back the same accounts: a target that was down and returns.
The target carries a provisioner account ``lgprov`` allowed exactly the README's sudoers line.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from gateway.provision.steps import SUDOERS_LINE
from tests.eventually import eventually_blocking
from tests.target import SSHD, free_port

PROVISIONER = "lgprov"
PERSON = "lgperson"  # a standing account on the target (elevation), already in lgdb
GROUPS = ("lgops", "lgdb")  # groups the tests' rules hand out, private to the namespace


@dataclass
class NsTarget:
    dir: Path
    port: int
    host_key: str = ""
    proc: subprocess.Popen[bytes] | None = None
    key_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.key_file = self.dir / "provisioner_key"

    @property
    def person_key(self) -> Path:
        return self.dir / "person_key"

    @property
    def root(self) -> Path:
        return self.dir / "root"

    def start(self) -> None:
        log = (self.dir / "sshd.log").open("ab")
        self.proc = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--pid",
                "--fork",
                "--mount-proc",
                "sh",
                str(self.dir / "ns.sh"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        proc = self.proc

        def listening() -> bool:
            if proc.poll() is not None:
                raise RuntimeError((self.dir / "sshd.log").read_text(errors="replace"))
            return (self.dir / "ready").exists() and _connects(self.port)

        eventually_blocking(listening, what=f"namespaced sshd on port {self.port}")

    def stop(self) -> None:
        """The target goes down: its sshd and every process in the namespace die."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        (self.dir / "ready").unlink(missing_ok=True)
        self.proc = None

    def inside(self, command: str) -> subprocess.CompletedProcess[str]:
        """Run a shell command as root inside the target's namespaces."""
        assert self.proc is not None
        child = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return subprocess.run(
            ["nsenter", "-t", child[0], "-m", "-p", "sh", "-c", command],
            capture_output=True,
            text=True,
            timeout=30,
        )

    # What the target's private /etc says, read from the host.
    def passwd(self) -> dict[str, list[str]]:
        lines = (self.root / "etc/passwd").read_text().splitlines()
        return {line.split(":")[0]: line.split(":") for line in lines if line}

    def group_members(self, group: str) -> list[str]:
        for line in (self.root / "etc/group").read_text().splitlines():
            parts = line.split(":")
            if parts[0] == group:
                return [m for m in parts[3].split(",") if m]
        raise KeyError(group)

    def sudoers_files(self) -> list[str]:
        return sorted(os.listdir(self.root / "etc/sudoers.d"))

    def processes_of(self, uid: int) -> list[int]:
        """PIDs (host numbering) whose real or effective UID is ``uid``."""
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    status = Path(f"/proc/{entry}/status").read_text()
                except OSError:
                    continue
                uids = next(line for line in status.splitlines() if line.startswith("Uid:"))
                if str(uid) in uids.split()[1:3]:
                    found.append(int(entry))
        return found

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _connects(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def make_target() -> NsTarget:
    """A fresh target directory (a private copy of /etc) with sshd and the provisioner set
    up; not yet started."""
    work = Path(tempfile.mkdtemp(prefix="lockgate-nstarget-"))
    work.chmod(0o700)  # holds a copy of /etc/shadow
    target = NsTarget(work, free_port())
    root = target.root
    (root / "home").mkdir(parents=True)
    (root / "log").mkdir()
    subprocess.run(["cp", "-a", "/etc", str(root / "etc")], check=True)
    for extra in (root / "etc/sudoers.d").iterdir():
        if extra.name != "README":
            extra.unlink()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "host_key")], check=True
    )
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(target.key_file)], check=True
    )
    target.host_key = " ".join((work / "host_key.pub").read_text().split()[:2])
    (work / "sshd_config").write_text(f"""
Port {target.port}
ListenAddress 127.0.0.1
HostKey {work / "host_key"}
PidFile {work / "sshd.pid"}
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
StrictModes yes
Subsystem sftp internal-sftp
LogLevel VERBOSE
""")
    groups = " && ".join(f"(getent group {g} >/dev/null || groupadd {g})" for g in GROUPS)
    person_key = work / "person_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(person_key)], check=True
    )
    (work / "ns.sh").write_text(f"""set -e
mount --make-rprivate /
mount --bind {root}/etc /etc
mount --bind {root}/home /home
mount --bind {root}/log /var/log
{groups}
if ! id {PROVISIONER} >/dev/null 2>&1; then
  useradd -m -s /bin/sh -p '*' {PROVISIONER}
  install -d -m 0700 -o {PROVISIONER} -g {PROVISIONER} /home/{PROVISIONER}/.ssh
  install -m 0600 -o {PROVISIONER} -g {PROVISIONER} {target.key_file}.pub \\
    /home/{PROVISIONER}/.ssh/authorized_keys
  echo '{PROVISIONER} {SUDOERS_LINE}' > /etc/sudoers.d/lockgate
  chmod 0440 /etc/sudoers.d/lockgate
  visudo -c -q -f /etc/sudoers.d/lockgate
  useradd -m -s /bin/sh -p '*' -G lgdb {PERSON}
  install -d -m 0700 -o {PERSON} -g {PERSON} /home/{PERSON}/.ssh
  install -m 0600 -o {PERSON} -g {PERSON} {person_key}.pub /home/{PERSON}/.ssh/authorized_keys
fi
mkdir -p /run/sshd
touch {work}/ready
exec {SSHD} -D -e -f {work}/sshd_config
""")
    return target


def host_has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
