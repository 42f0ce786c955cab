"""The SSH target of the end-to-end tests: a real sshd on a free loopback port with its own
configuration, host key and a dedicated unix account (created once with useradd; tests run as
root, as CI does).

The account's password is kept in a root-only file and reused, so that two test runs on one
machine do not reset each other's password.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.eventually import eventually_blocking

if TYPE_CHECKING:
    from gateway.services import Services

PASSWORD_FILE = Path("/root/.lockgate-test-target-password")
# Parallel test workers (pytest-xdist) each start their own sshd; the account and its
# password are set up by one at a time.
SETUP_LOCK = Path("/root/.lockgate-test-target.lock")
# Where tests put files on the target (the host's /tmp): a prefix of this worker's own, so
# that parallel workers never overwrite each other's.
SCRATCH = f"/tmp/lockgate-test-{os.getpid()}-"


def ssh_argv(port: int, key_file: Path, login: str, *extra: str) -> list[str]:
    """A non-interactive OpenSSH client command that trusts any host key and reads no
    configuration but its own options."""
    return [
        "ssh",
        "-p",
        str(port),
        "-i",
        str(key_file),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
        "-F",
        "/dev/null",
        *extra,
        f"{login}@127.0.0.1",
    ]


def _target_password() -> str:
    try:
        return PASSWORD_FILE.read_text().strip()
    except FileNotFoundError:
        password = "target-" + secrets.token_urlsafe(12)
        fd = os.open(PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password)
        return password


TARGET_USER = "lgtest"
SSHD = "/usr/sbin/sshd"

if not Path(SSHD).exists() or shutil.which("ssh") is None:  # pragma: no cover
    pytest.fail(
        "the end-to-end tests need openssh-server and openssh-client installed", pytrace=False
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sshd:
    port: int
    host_key: str  # "TYPE BASE64"
    password: str
    dir: Path
    ca_file: Path
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.dir / "sshd.log"

    def connections(self) -> int:
        return self.log.read_text(errors="replace").count("Connection from")


def _ensure_account(password: str) -> None:
    if subprocess.run(["id", TARGET_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", TARGET_USER], check=True)
    subprocess.run(["chpasswd"], input=f"{TARGET_USER}:{password}".encode(), check=True)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    # sshd reads authorized keys as the target account: the directory must be reachable.
    workdir = Path(tempfile.mkdtemp(prefix="lockgate-sshd-"))
    workdir.chmod(0o755)
    with SETUP_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        password = _target_password()
        _ensure_account(password)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / "host_key")], check=True
    )
    ca_file = workdir / "trusted_ca.pub"
    ca_file.write_text("")
    keys_dir = workdir / "authorized_keys"
    keys_dir.mkdir()
    port = free_port()
    (workdir / "sshd_config").write_text(f"""
Port {port}
ListenAddress 127.0.0.1
HostKey {workdir / "host_key"}
PidFile {workdir / "sshd.pid"}
AuthorizedKeysFile {keys_dir}/%u
TrustedUserCAKeys {ca_file}
PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
StrictModes no
AllowTcpForwarding yes
AcceptEnv LANG LC_* TZ LD_PRELOAD LOCKGATE_PROBE
Subsystem sftp internal-sftp
LogLevel VERBOSE
MaxStartups 200
MaxSessions 50
""")
    Path("/run/sshd").mkdir(exist_ok=True)
    host_key = " ".join((workdir / "host_key.pub").read_text().split()[:2])
    server = Sshd(port, host_key, password, workdir, ca_file)
    log = server.log.open("wb")
    server.proc = proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(workdir / "sshd_config")], stdout=log, stderr=subprocess.STDOUT
    )

    def listening() -> bool:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        if proc.poll() is not None:
            raise RuntimeError(server.log.read_text())
        return False

    eventually_blocking(listening, what=f"sshd listening on port {port}")
    yield server
    server.proc.terminate()
    server.proc.wait(10)
    log.close()
    shutil.rmtree(workdir, ignore_errors=True)


async def register_target(services: Services, sshd: Sshd, name: str = "db01") -> None:
    """The sshd as a gateway target, pinned, with its password vaulted."""
    from policy.service import SYSTEM_ACTOR
    from vault.secret import Secret

    await services.policy.add_target(
        SYSTEM_ACTOR,
        name,
        host="127.0.0.1",
        port=sshd.port,
        host_key=sshd.host_key,
        accounts=[TARGET_USER],
    )
    await services.vault.set_credential(
        SYSTEM_ACTOR, name, TARGET_USER, "password", Secret(sshd.password)
    )
