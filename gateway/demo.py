"""``lockgate demo``: a loopback SSH target inside the gateway process, a demo user with a
generated key and an auto-approving rule, so a first user can try the whole path at once.

The demo target gives a real shell (in a pty), exec and SFTP, as the operating-system user
running Lockgate, starting in a scratch directory (file transfers too: relative paths are
from there, absolute ones are the machine's, as in the shell). It listens on 127.0.0.1
only, with a random password that exists only in the vault, so it is reachable only through
the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import secrets
import shutil
import struct
import termios
from pathlib import Path

import asyncssh

from policy.models import Rule
from policy.service import SYSTEM_ACTOR
from vault.secret import Secret

DEMO_TARGET = "demo"
DEMO_USER = "demo"
DEMO_RULE = Rule(
    name="demo",
    roles=frozenset({"demo"}),
    targets=(DEMO_TARGET,),
    approvals=0,
    require_reason=False,
)


def _set_size(fd: int, size: tuple[int, int, int, int]) -> None:
    cols, rows, xpix, ypix = size
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows or 24, cols or 80, xpix, ypix))


class _DemoServer(asyncssh.SSHServer):
    def __init__(self, account: str, password: str) -> None:
        self.account = account
        self.password = password

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        import hmac

        return username == self.account and hmac.compare_digest(password, self.password)


class _DemoFiles(asyncssh.SFTPServer):
    """SFTP and scp on the demo target: relative paths from the demo home, absolute ones as
    they are (the shell is not confined either), and an exit status at the end as OpenSSH's
    sftp-server gives (without one the gateway reports the channel as lost and scp fails)."""

    def __init__(self, chan: asyncssh.SSHServerChannel[bytes], home: Path) -> None:
        super().__init__(chan)
        self.home = os.fsencode(home)

    def map_path(self, path: bytes) -> bytes:
        return path if path.startswith(b"/") else os.path.join(self.home, path)

    def exit(self) -> None:
        self.channel.exit(0)


async def _copy(reader: asyncio.StreamReader, writer: asyncssh.SSHWriter[bytes]) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def _feed(process: asyncssh.SSHServerProcess[bytes], stdin: asyncio.StreamWriter) -> None:
    """The person's input to the command, then its end of file. Not asyncssh's redirect:
    that leaves a clean-up coroutine that only ``wait_closed`` would await."""
    try:
        while True:
            try:
                data = await process.stdin.read(65536)
            except (asyncssh.BreakReceived, asyncssh.SignalReceived, asyncssh.TerminalSizeChanged):
                continue
            if not data:
                break
            stdin.write(data)
            await stdin.drain()
    except (ConnectionError, asyncssh.Error):
        pass
    finally:
        stdin.close()


async def _run(process: asyncssh.SSHServerProcess[bytes], home: Path) -> None:
    shell = shutil.which("bash") or "/bin/sh"
    env = {
        "HOME": str(home),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "TERM": process.get_terminal_type() or "dumb",
        "PS1": "demo$ ",
    }
    env.update({k: v for k, v in process.env.items() if k in ("LANG", "TZ")})
    command = process.command
    if process.get_terminal_type() is None:
        proc = await asyncio.create_subprocess_exec(
            shell,
            "-c",
            command or "cat",
            cwd=home,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        feed = asyncio.ensure_future(_feed(process, proc.stdin))
        # Every byte the command wrote is sent before the exit status: exiting as soon as the
        # child ended dropped output still in flight.
        await asyncio.gather(_copy(proc.stdout, process.stdout), _copy(proc.stderr, process.stderr))
        status = await proc.wait()
        feed.cancel()
        process.exit(status)
        return
    master, slave = pty.openpty()
    _set_size(slave, process.get_terminal_size())
    argv = [shell, "-c", command] if command else [shell, "-i"]
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=home, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
    )
    os.close(slave)
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            data = os.read(master, 65536)
        except OSError:
            data = b""
        if data:
            process.stdout.write(data)
        else:
            loop.remove_reader(master)

    loop.add_reader(master, readable)

    async def pump_input() -> None:
        while True:
            try:
                data = await process.stdin.read(65536)
            except asyncssh.TerminalSizeChanged as change:
                _set_size(master, (change.width, change.height, change.pixwidth, change.pixheight))
                continue
            if not data:
                return
            os.write(master, data)

    pump = asyncio.ensure_future(pump_input())
    status = await proc.wait()
    await asyncio.sleep(0.05)
    loop.remove_reader(master)
    with contextlib.suppress(OSError):
        while data := os.read(master, 65536):
            process.stdout.write(data)
    pump.cancel()
    os.close(master)
    process.exit(status)


async def start_demo_target(home: Path) -> tuple[asyncssh.SSHAcceptor, int, str, str]:
    """Start the target on 127.0.0.1; returns (acceptor, port, host key line, password)."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    (home / "README").write_text(
        "This is the Lockgate demo target. Everything you type here is recorded.\n"
    )
    account = os.environ.get("USER") or "demo"
    password = secrets.token_urlsafe(24)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    acceptor = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        server_factory=lambda: _DemoServer(account, password),
        process_factory=lambda p: _run(p, home),
        encoding=None,
        sftp_factory=lambda chan: _DemoFiles(chan, home),
        allow_scp=True,
        agent_forwarding=False,
        x11_forwarding=False,
    )
    line = " ".join(host_key.export_public_key().decode().split()[:2])
    return acceptor, acceptor.get_port(), line, f"{account}\0{password}"


async def provision(
    services: object, data_dir: Path, port: int, host_key: str, account_password: str
) -> Path:
    """The demo target, its vaulted password, the demo user and key (idempotent)."""
    from gateway.services import Services

    assert isinstance(services, Services)
    account, password = account_password.split("\0", 1)
    policy, vault = services.policy, services.vault
    key_path = data_dir / "demo_id_ed25519"
    if not key_path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment="lockgate-demo")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.export_private_key())
        key_path.with_suffix(".pub").write_bytes(key.export_public_key())
    public = key_path.with_suffix(".pub").read_text()
    from policy.errors import Conflict

    with contextlib.suppress(Conflict):
        await policy.add_user(SYSTEM_ACTOR, DEMO_USER, roles=["demo"], public_keys=[public])
    try:
        await policy.add_target(
            SYSTEM_ACTOR,
            DEMO_TARGET,
            host="127.0.0.1",
            port=port,
            host_key=host_key,
            accounts=[account],
            labels={"env": "demo"},
        )
    except Conflict:  # a previous demo run: the target moved to a new port and host key
        await policy.set_target_endpoint(
            SYSTEM_ACTOR, DEMO_TARGET, host="127.0.0.1", port=port, host_key=host_key
        )
    await vault.set_credential(SYSTEM_ACTOR, DEMO_TARGET, account, "password", Secret(password))
    return key_path
