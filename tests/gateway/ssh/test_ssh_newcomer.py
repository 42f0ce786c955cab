"""What a person sees at the SSH door with real OpenSSH: a login without ``+`` explained, the
TOTP code not echoed while typed, and gateway-shell errors with one ``lockgate:``."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import termios
from datetime import UTC, datetime

from policy.service import SYSTEM_ACTOR
from tests.gateway.ssh.conftest import Gateway
from vault import totp


async def test_a_login_without_plus_explains_the_grammar(gateway: Gateway) -> None:
    argv = gateway.ssh_args("alice", "alice@db01")
    argv[argv.index("LogLevel=ERROR")] = "LogLevel=INFO"  # as a person's ssh shows banners
    status, _, err = await gateway.run([*argv, "true"])
    assert status == 255
    text = err.decode()
    assert "is not a Lockgate login; log in as USER+ACCOUNT@TARGET" in text
    assert "did you mean alice+db01?" in text


async def test_gateway_shell_errors_say_lockgate_once(gateway: Gateway) -> None:
    status, _, err = await gateway.ssh("alice", "alice", "request")
    assert status == 2
    assert err.decode().startswith("lockgate: request: the following arguments are required")
    assert "lockgate: lockgate" not in err.decode()


def _take_terminal() -> None:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def test_the_totp_code_is_not_echoed(gateway: Gateway) -> None:
    """Password and code typed into a real ssh on a terminal, as a person does: neither
    appears on the screen."""
    password = "carol's long passphrase"
    await gateway.policy.add_user(SYSTEM_ACTOR, "carol", roles=["dev"], password=password)
    uri = await gateway.services.vault.enroll_totp(SYSTEM_ACTOR, "carol")
    await gateway.policy.set_totp_enabled(SYSTEM_ACTOR, "carol", True)
    seed = _seed(uri)
    argv = gateway.ssh_args("alice", "carol")
    argv[argv.index("BatchMode=yes")] = "BatchMode=no"
    argv[1:1] = ["-o", "PreferredAuthentications=keyboard-interactive", "-tt"]
    master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=slave, stdout=slave, stderr=slave, preexec_fn=_take_terminal
    )
    os.close(slave)
    seen = b""

    async def until(text: bytes) -> None:
        nonlocal seen
        while text not in seen:
            seen += await asyncio.to_thread(os.read, master, 4096)

    try:
        await asyncio.wait_for(until(b"Password:"), 30)
        os.write(master, password.encode() + b"\n")
        await asyncio.wait_for(until(b"Verification code:"), 30)
        code = totp.code_at(seed, datetime.now(UTC))
        os.write(master, code.encode() + b"\n")
        await asyncio.wait_for(until(b"gateway shell for carol"), 30)
        os.write(master, b"exit\n")
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)
    assert password.encode() not in seen
    after_prompt = seen.split(b"Verification code:", 1)[1].split(b"gateway shell", 1)[0]
    assert code.encode() not in after_prompt, after_prompt


def _seed(uri: str) -> bytes:
    import base64
    from urllib.parse import parse_qs, urlsplit

    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    return base64.b32decode(secret + "=" * (-len(secret) % 8))


async def _read_until(master: int, seen: bytearray, text: bytes) -> None:
    while text not in seen:
        seen += await asyncio.to_thread(os.read, master, 4096)


async def test_request_wait_says_so_at_once_and_ctrl_c_stops_waiting(gateway: Gateway) -> None:
    """In the gateway shell's prompt on a real terminal: the waiting line shows before any
    decision; Ctrl-C stops the wait, the request stays pending, and the prompt answers."""
    argv = gateway.ssh_args("alice", "alice")
    argv[1:1] = ["-tt"]
    master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=slave, stdout=slave, stderr=slave, preexec_fn=_take_terminal
    )
    os.close(slave)
    seen = bytearray()
    try:
        await asyncio.wait_for(_read_until(master, seen, b"lockgate> "), 30)
        os.write(master, b'request db01 --for 30m --reason "INC-7 wait" --wait\r')
        await asyncio.wait_for(_read_until(master, seen, b"waiting (Ctrl-C stops waiting"), 30)
        pending = await gateway.policy.list_requests("alice", pending_only=True, mine_only=True)
        assert len(pending) == 1  # nothing decided yet, and the line is already there
        os.write(master, b"\x03")
        await asyncio.wait_for(_read_until(master, seen, b"stopped waiting; request"), 30)
        os.write(master, b"requests\r")
        await asyncio.wait_for(_read_until(master, seen, b"INC-7 wait"), 30)
        os.write(master, b"exit\r")
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)
    still = await gateway.policy.list_requests("alice", pending_only=True, mine_only=True)
    assert [r.id for r in still] == [r.id for r in pending]


async def test_request_wait_as_a_command_ends_when_approved(gateway: Gateway) -> None:
    proc = await asyncio.create_subprocess_exec(
        *gateway.ssh_args("alice", "alice"),
        "request", "db01", "--for", "30m", "--reason", "INC-8", "--wait",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    line = await asyncio.wait_for(proc.stderr.readline(), 30)
    assert b"is pending approval; waiting" in line
    [request] = await gateway.policy.list_requests("alice", pending_only=True, mine_only=True)
    assert request.id.encode() in line
    await gateway.policy.approve("bob", request.id, "go")
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert b"approved: ssh -p" in out
