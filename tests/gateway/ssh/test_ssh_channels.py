"""Channel kinds, forwarding and environment rules, credentials, host keys, the gateway shell."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import asyncssh
import pytest

from policy.service import SYSTEM_ACTOR
from tests.eventually import eventually
from tests.gateway.ssh.conftest import TARGET_USER, Gateway, free_port
from vault.secret import Secret

LOGIN = f"alice+{TARGET_USER}@db01"


async def test_pty_shell_with_term_and_block_rule(gateway: Gateway) -> None:
    await gateway.grant("alice")
    env = {**os.environ, "TERM": "xterm-256color"}
    proc = await asyncio.create_subprocess_exec(
        *gateway.ssh_args("alice", LOGIN, "-tt"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    script = b"echo TERM-is-$TERM\rstty size\rshutdown -h now\recho after-block\rexit 3\r"
    out, err = await asyncio.wait_for(proc.communicate(script), 30)
    text = out.decode(errors="replace") + err.decode(errors="replace")
    assert "TERM-is-xterm-256color" in text
    assert "[lockgate] command blocked by rule no-shutdown" in text
    assert "after-block" in text
    assert proc.returncode == 3


async def test_refusals_agent_x11_remote_forward_env(gateway: Gateway) -> None:
    await gateway.grant("alice")
    env = {**os.environ, "LD_PRELOAD": "/evil.so", "LANG": "C.UTF-8", "LOCKGATE_PROBE": "x"}
    argv = gateway.ssh_args(
        "alice", LOGIN, "-A", "-X", "-o", "SendEnv=LD_PRELOAD LANG LOCKGATE_PROBE"
    )
    proc = await asyncio.create_subprocess_exec(
        *argv,
        'echo "agent=${SSH_AUTH_SOCK:-none} display=${DISPLAY:-none} '
        'ld=${LD_PRELOAD:-none} lang=${LANG:-none} probe=${LOCKGATE_PROBE:-none}"',
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert out.decode().strip() == ("agent=none display=none ld=none lang=C.UTF-8 probe=none")
    code, _, err = await gateway.ssh(
        "alice", LOGIN, "true", extra=("-R", "0:127.0.0.1:22", "-o", "ExitOnForwardFailure=yes")
    )
    assert code != 0 and b"forwarding failed" in err.lower()


async def _echo_server() -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.2", 0)
    return server, server.sockets[0].getsockname()[1]


async def _through_forward(
    gateway: Gateway, user: str, dest_port: int, dest_host: str = "127.0.0.2"
) -> bytes | None:
    local = free_port()
    login = f"{user}+{TARGET_USER}@db01"
    proc = await asyncio.create_subprocess_exec(
        *gateway.ssh_args(user, login, "-N", "-L", f"{local}:{dest_host}:{dest_port}"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )

    async def listening() -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | str | None:
        try:
            return await asyncio.open_connection("127.0.0.1", local)
        except OSError:
            return "exited" if proc.returncode is not None else None

    try:
        opened = await eventually(listening, what=f"ssh -L {local} listening, or exited")
        if not isinstance(opened, tuple):
            return None  # the client gave up: there is no forward
        reader, writer = opened
        try:
            writer.write(b"ping through the target")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(100), 10)
        except ConnectionResetError:
            return None
        writer.close()
        return data
    finally:
        # SIGKILL, not SIGTERM: OpenSSH 9.2's client can take a SIGTERM just before it sleeps
        # in poll() and then sleeps on until the next packet (the gateway's keepalive, 60 s).
        proc.kill()
        await proc.wait()


async def test_local_forward_only_where_rule_allows(gateway: Gateway) -> None:
    server, port = await _echo_server()
    try:
        await gateway.grant("alice")
        assert await _through_forward(gateway, "alice", port) in (None, b"")
        await gateway.policy.create_request("fred", "db01", account=TARGET_USER)
        assert await _through_forward(gateway, "fred", port) == b"ping through the target"
        sshd = gateway.sshd.port
        assert await _through_forward(gateway, "fred", sshd, "127.0.0.1") in (None, b"")
        # Any spelling of the listed address is that address; any of the sshd's is refused.
        assert await _through_forward(gateway, "fred", port, "127.2") == b"ping through the target"
        for spelling in ("2130706433", "0x7f.1", "[::ffff:127.0.0.1]", "localhost"):
            assert await _through_forward(gateway, "fred", sshd, spelling) in (None, b""), spelling
    finally:
        server.close()


async def test_private_key_and_certificate_credentials(gateway: Gateway, tmp_path: Path) -> None:
    await gateway.grant("alice")
    key = asyncssh.generate_private_key("ssh-ed25519")
    keys_file = gateway.sshd.dir / "authorized_keys" / TARGET_USER
    keys_file.write_bytes(key.export_public_key())
    vault = gateway.services.vault
    await vault.set_credential(
        SYSTEM_ACTOR, "db01", TARGET_USER, "private_key", Secret(key.export_private_key())
    )
    code, out, err = await gateway.ssh("alice", LOGIN, "echo via-key")
    assert (code, out) == (0, b"via-key\n"), err
    keys_file.unlink()
    info = await vault.create_ssh_ca(SYSTEM_ACTOR, "db01", TARGET_USER)
    gateway.sshd.ca_file.write_text(info.public["ca_public_key"] + "\n")
    try:
        code, out, err = await gateway.ssh("alice", LOGIN, "echo via-cert")
        assert (code, out) == (0, b"via-cert\n"), err
        log = gateway.sshd.log.read_text()
        assert "ID se-" in log  # the certificate's key id is the session id
    finally:
        gateway.sshd.ca_file.write_text("")


async def test_pinned_host_key_mismatch_and_dead_target(gateway: Gateway) -> None:
    wrong = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    policy = gateway.policy
    await policy.add_target(
        SYSTEM_ACTOR,
        "db02",
        host="127.0.0.1",
        port=gateway.sshd.port,
        host_key=wrong,
        accounts=[TARGET_USER],
    )
    await policy.add_target(
        SYSTEM_ACTOR,
        "db03",
        host="127.0.0.1",
        port=free_port(),
        host_key=gateway.sshd.host_key,
        accounts=[TARGET_USER],
    )
    for target in ("db02", "db03"):
        await gateway.services.vault.set_credential(
            SYSTEM_ACTOR, target, TARGET_USER, "password", Secret(gateway.sshd.password)
        )
        await gateway.grant("alice", target=target)
    await gateway.grant("alice")
    live = asyncio.create_task(gateway.ssh("alice", LOGIN, "sleep 1; echo still-alive"))
    code, _, err = await gateway.ssh("alice", f"alice+{TARGET_USER}@db02", "true")
    assert code != 0 and b"does not match the pinned key" in err
    code, _, err = await gateway.ssh("alice", f"alice+{TARGET_USER}@db03", "true")
    assert code != 0 and b"cannot reach db03" in err
    assert (await live)[1] == b"still-alive\n"


async def test_gateway_shell(gateway: Gateway) -> None:
    code, out, err = await gateway.ssh("alice", "alice", "whoami", "--json")
    assert code == 0, err
    assert json.loads(out)["name"] == "alice"
    code, out, _ = await gateway.ssh("alice", "alice", "targets")
    assert b"db01" in out
    code, out, err = await gateway.ssh(
        "alice",
        "alice",
        "request",
        "db01",
        "--for",
        "30m",
        "--reason",
        "'INC-9 check disk'",
        "--json",
    )
    assert code == 0, err
    request = json.loads(out)
    assert request["state"] == "pending"
    await gateway.policy.approve("bob", request["id"])
    code, out, _ = await gateway.ssh("alice", "alice", "grants")
    assert b"db01" in out and f"alice+{TARGET_USER}@db01@".encode() in out
    code, _, err = await gateway.ssh("alice", "alice", "request", "db01", "--for", "forever")
    assert code == 2 and err.startswith(b"lockgate: ")
    code, _, err = await gateway.ssh("alice", "alice", "frobnicate")
    assert code == 2


async def test_recording_is_sealed_and_holds_no_credential(gateway: Gateway) -> None:
    from recorder.integrity import verify_file

    await gateway.grant("alice")
    code, _out, _ = await gateway.ssh("alice", LOGIN, "echo recorded-output-123")
    assert code == 0
    files = list((gateway.workdir / "recordings").rglob("*.lgrec"))
    assert len(files) == 1
    await eventually(lambda: not gateway.gw.registry.sessions, what="the session to close")
    data = files[0].read_bytes()
    assert b"recorded-output-123" in data
    assert gateway.sshd.password.encode() not in data
    result = verify_file(files[0])
    assert result.ok and result.sealed, result


async def test_per_session_mfa(gateway: Gateway) -> None:
    """A rule with mfa_per_session: the key alone is refused; password + fresh TOTP pass."""
    import base64
    from dataclasses import replace

    from vault import totp

    policy = gateway.policy
    policy.rules = tuple(
        replace(r, mfa_per_session=True) if r.name == "dev" else r for r in policy.rules
    )
    await policy.set_password(SYSTEM_ACTOR, "alice", "alice's long password")
    uri = await gateway.services.vault.enroll_totp(SYSTEM_ACTOR, "alice")
    await policy.set_totp_enabled(SYSTEM_ACTOR, "alice", True)
    secret = uri.split("secret=")[1].split("&")[0]
    seed = base64.b32decode(secret + "=" * (-len(secret) % 8))
    await gateway.grant("alice")

    code, _, _ = await gateway.ssh("alice", LOGIN, "true")
    assert code != 0  # the key alone no longer opens this target

    answers: list[str] = []

    class Client(asyncssh.SSHClient):
        def kbdint_auth_requested(self) -> str:
            return ""

        def kbdint_challenge_received(
            self, name: str, instructions: str, lang: str, prompts: list[tuple[str, bool]]
        ) -> list[str] | None:
            self.rounds = getattr(self, "rounds", 0) + any("Password" in p for p, _ in prompts)
            if self.rounds > 1:
                return None  # one round only: a refused login must end, not retry
            replies = []
            for prompt, _ in prompts:
                answers.append(prompt)
                replies.append(
                    "alice's long password"
                    if "Password" in prompt
                    else totp.code_at(seed, gateway.timer.now())
                )
            return replies

    conn, _ = await asyncssh.create_connection(
        Client,
        "127.0.0.1",
        gateway.port,
        username=LOGIN,
        known_hosts=None,
        config=None,
        client_keys=[str(gateway.clients["alice"].key_file)],
        agent_path=None,
        preferred_auth="publickey,keyboard-interactive",
    )
    async with conn:
        result = await conn.run("echo with-mfa", check=False)
    assert result.stdout == "with-mfa\n"
    assert answers == ["Password: ", "Verification code: "]
    # the same code cannot be used again (replay): the login is refused
    with pytest.raises((asyncssh.PermissionDenied, asyncssh.ConnectionLost)):
        await asyncssh.create_connection(
            Client,
            "127.0.0.1",
            gateway.port,
            username=LOGIN,
            known_hosts=None,
            config=None,
            client_keys=None,
            agent_path=None,
            preferred_auth="keyboard-interactive",
        )


async def test_a_stalled_recording_disk_pauses_the_target(gateway: Gateway) -> None:
    """Nothing goes unrecorded and nothing piles up: while the recording's disk is stalled
    the gateway stops reading from the target; when it recovers, every byte arrives."""
    import threading

    from recorder.writer import HIGH_WATER

    await gateway.grant("alice")
    stall = threading.Event()
    gateway.gw.recorder.writer.submit(stall.wait)
    size = 64 * 1024 * 1024
    proc = await asyncio.create_subprocess_exec(
        *gateway.ssh_args("alice", LOGIN),
        f"head -c {size} /dev/zero",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    transfer = asyncio.ensure_future(proc.communicate())
    try:
        readings: list[int] = []

        def paused() -> bool:  # no progress for half a second: the target is paused
            sessions = list(gateway.gw.registry.sessions.values())
            readings.append(sessions[0].bytes_down if sessions else 0)
            return bool(readings[-1]) and readings[-5:] == [readings[-1]] * 5

        await eventually(paused, timeout=60, interval=0.1, what="the target paused")
        assert not transfer.done()
        assert 0 < readings[-1] <= HIGH_WATER + 8 * 1024 * 1024
    finally:
        stall.set()
    out, _ = await asyncio.wait_for(transfer, 120)
    assert proc.returncode == 0 and len(out) == size
