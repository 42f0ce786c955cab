"""The SSH door under the attack-and-fault review's findings, with real OpenSSH clients, a real
sshd target and a real node: legacy scp is a file transfer; password guessing neither locks an
account for everyone nor delays key logins; pre-auth and channel caps; Terrapin-safe
algorithms for clients without strict KEX."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from gateway.config import Limits, Listen, ServerConfig
from gateway.sessions.records import NewSession, SessionRecord
from gateway.ssh import terrapin
from policy.models import Rule
from policy.service import SYSTEM_ACTOR
from recorder.store import RecordingStore
from tests.clock import FakeTimer
from tests.eventually import eventually
from tests.gateway.ssh.conftest import Client, Gateway
from tests.gateway.ssh.test_ssh_basic import scp_options
from tests.nodes import start_test_node
from tests.target import SCRATCH, TARGET_USER, Sshd, free_port, register_target
from vault.secret import Secret

RULES = (
    Rule(
        name="exec-only",
        roles=frozenset({"execer"}),
        approvals=0,
        require_reason=False,
        channels=frozenset({"exec"}),
    ),
    Rule(
        name="files-only",
        roles=frozenset({"mover"}),
        approvals=0,
        require_reason=False,
        channels=frozenset({"sftp"}),
    ),
)
PEOPLE = {"alice": ["mover"], "ed": ["execer"]}


async def _harness(db_url: str, sshd: Sshd, tmp_path: Path, **overrides: Any) -> Gateway:
    timer = FakeTimer(datetime.now(UTC))
    node = await start_test_node(
        db_url,
        tmp_path,
        name="hardening-node",
        rules=RULES,
        timer=timer,
        recordings_path=tmp_path / "recordings",
        **overrides,
    )
    harness = Gateway(
        node.ssh_port, node.services, node.gateway, timer, node.killswitch, sshd, tmp_path
    )
    harness.node = node  # type: ignore[attr-defined]
    for name, roles in PEOPLE.items():
        key_file = tmp_path / f"id_{name}"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_file)], check=True
        )
        await node.services.policy.add_user(
            SYSTEM_ACTOR, name, roles=roles, public_keys=[(tmp_path / f"id_{name}.pub").read_text()]
        )
        harness.clients[name] = Client(name, key_file)
    await register_target(node.services, sshd)
    return harness


@pytest.fixture
async def hard(db_url: str, sshd: Sshd, tmp_path: Path) -> AsyncIterator[Gateway]:
    harness = await _harness(db_url, sshd, tmp_path)
    try:
        yield harness
    finally:
        await harness.node.stop("test finished")  # type: ignore[attr-defined]


def _scp(gateway: Gateway, user: str) -> list[str]:
    return ["scp", "-O", *scp_options(gateway), "-i", str(gateway.clients[user].key_file)]


async def _file_ops(gateway: Gateway) -> list[dict[str, Any]]:
    store = RecordingStore(gateway.workdir / "recordings", gateway.services.maker)
    ops: list[dict[str, Any]] = []

    async def sealed(session_id: str) -> bool:
        return (await store.get(session_id)).sealed

    try:
        for info in await store.recent():
            await eventually(partial(sealed, info.session_id), what=f"{info.session_id} sealed")
            await store.index(info.session_id)
            ops += [e for e in await store.timeline(info.session_id) if e["kind"] == "sftp"]
    finally:
        await store.aclose()
    return ops


async def test_legacy_scp_is_a_file_transfer_recorded_and_audited_like_sftp(
    hard: Gateway, tmp_path: Path
) -> None:
    payload = os.urandom(150_000)
    src = tmp_path / "legacy.bin"
    src.write_bytes(payload)
    login = f"alice+{TARGET_USER}@db01@127.0.0.1"
    code, _, err = await hard.run([*_scp(hard, "alice"), str(src), f"{login}:{SCRATCH}legacy.bin"])
    assert code == 0, err
    back = tmp_path / "legacy-back.bin"
    code, _, err = await hard.run([*_scp(hard, "alice"), f"{login}:{SCRATCH}legacy.bin", str(back)])
    assert code == 0, err
    assert back.read_bytes() == payload
    # A shell command dressed as scp is an exec, which this rule does not allow.
    code, _, err = await hard.ssh("alice", f"alice+{TARGET_USER}@db01", "scp -t /tmp/x; id")
    assert code != 0 and b"lockgate: " in err
    ops = [
        {k: e.get(k) for k in ("op", "path", "bytes", "result")}
        for e in await _file_ops(hard)
        if e.get("op") in ("upload", "download")
    ]
    assert {"op": "upload", "path": f"{SCRATCH}legacy.bin", "bytes": 150_000, "result": "ok"} in ops
    assert {
        "op": "download",
        "path": f"{SCRATCH}legacy.bin",
        "bytes": 150_000,
        "result": "ok",
    } in ops
    audited = [
        (e.action, e.details.get("path"), e.details.get("bytes"))
        for e in await hard.services.audit.events()
        if e.action.startswith("sftp.")
    ]
    assert ("sftp.upload", f"{SCRATCH}legacy.bin", 150_000) in audited
    assert ("sftp.download", f"{SCRATCH}legacy.bin", 150_000) in audited


async def test_legacy_scp_is_refused_under_an_exec_only_rule(hard: Gateway, tmp_path: Path) -> None:
    src = tmp_path / "nope.bin"
    src.write_bytes(b"x" * 100)
    login = f"ed+{TARGET_USER}@db01@127.0.0.1"
    code, _, err = await hard.run([*_scp(hard, "ed"), str(src), f"{login}:{SCRATCH}nope.bin"])
    assert code != 0 and b"lockgate: " in err, err
    code, out, err = await hard.ssh("ed", f"ed+{TARGET_USER}@db01", "echo", "exec-ok")
    assert code == 0 and out.strip() == b"exec-ok", err


async def _password_login(gateway: Gateway, user: str, password: str, source: str) -> bool:
    try:
        async with asyncssh.connect(
            "127.0.0.1",
            gateway.port,
            username=user,
            password=password,
            known_hosts=None,
            client_keys=None,
            agent_path=None,
            preferred_auth="password",
            local_addr=(source, 0),
        ):
            return True
    except asyncssh.PermissionDenied:
        return False


async def test_a_stranger_cannot_lock_the_account_for_everyone(hard: Gateway) -> None:
    await hard.policy.set_password(SYSTEM_ACTOR, "ed", "ed-correct-horse-battery")
    for _ in range(6):
        assert not await _password_login(hard, "ed", "guess-123456789", "127.0.0.2")
    # The stranger's address is locked out of ed, even with the right password ...
    assert not await _password_login(hard, "ed", "ed-correct-horse-battery", "127.0.0.2")
    # ... ed elsewhere is not, and password failures never block a key.
    assert await _password_login(hard, "ed", "ed-correct-horse-battery", "127.0.0.1")
    code, out, err = await hard.run(
        [*hard.ssh_args("ed", f"ed+{TARGET_USER}@db01", "-b", "127.0.0.2"), "echo", "key-ok"]
    )
    assert code == 0 and out.strip() == b"key-ok", err


@pytest.fixture
async def storm_gateway(db_url: str, sshd: Sshd, tmp_path: Path) -> AsyncIterator[Gateway]:
    harness = await _harness(
        db_url, sshd, tmp_path, limits=Limits(login_workers=1, login_queue=100)
    )
    try:
        yield harness
    finally:
        await harness.node.stop("test finished")  # type: ignore[attr-defined]


async def test_key_logins_go_on_while_a_storm_of_passwords_is_hashed(
    storm_gateway: Gateway,
) -> None:
    gw = storm_gateway
    hashing = gw.services.hashing
    storm = [
        asyncio.ensure_future(_password_login(gw, f"ghost{i}", "wrong-password-1", "127.0.0.3"))
        for i in range(60)
    ]
    try:
        await eventually(lambda: hashing.pending >= 10, what="the storm queued at the hash pool")
        code, out, err = await gw.ssh("ed", f"ed+{TARGET_USER}@db01", "echo", "during-storm")
        assert code == 0 and out.strip() == b"during-storm", err
        assert hashing.pending > 0  # done before the storm was: it never queued behind it
    finally:
        for task in storm:
            task.cancel()
        await asyncio.gather(*storm, return_exceptions=True)


@pytest.fixture
async def limited(db_url: str, sshd: Sshd, tmp_path: Path) -> AsyncIterator[Gateway]:
    limits = Limits(ssh_max_startups=4, ssh_max_channels=3, ssh_login_grace_time=2)
    harness = await _harness(db_url, sshd, tmp_path, limits=limits)
    try:
        yield harness
    finally:
        await harness.node.stop("test finished")  # type: ignore[attr-defined]


async def _key_connection(gateway: Gateway, user: str, login: str) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        "127.0.0.1",
        gateway.port,
        username=login,
        client_keys=[str(gateway.clients[user].key_file)],
        known_hosts=None,
        agent_path=None,
    )


async def test_channels_per_connection_are_capped(limited: Gateway) -> None:
    async with await _key_connection(limited, "ed", f"ed+{TARGET_USER}@db01") as conn:
        held = [await conn.create_process("sleep 30") for _ in range(3)]
        with pytest.raises(asyncssh.ChannelOpenError) as refused:
            await conn.create_process("echo one-too-many")
        assert "at most 3 channels" in refused.value.reason
        held[0].close()
        await held[0].wait_closed()
        result = await conn.run("echo room-again", check=True)
        assert result.stdout == "room-again\n"
        for proc in held[1:]:
            proc.close()


async def _until_eof(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 20)


async def test_unauthenticated_connections_are_capped_overall_and_per_address(
    limited: Gateway,
) -> None:
    port = limited.port
    held = [await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.4", 0))]
    # A second one from the same address (a quarter of 4) is closed before any key exchange
    # (after the version line), while the first waits for it.
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.4", 0))
    assert (await _until_eof(reader)).startswith(b"SSH-2.0-")
    assert not held[0][0].at_eof()
    writer.close()
    for last in (5, 6, 7):
        held.append(
            await asyncio.open_connection("127.0.0.1", port, local_addr=(f"127.0.0.{last}", 0))
        )
    for r, _ in held:  # each of the four admitted got the server's version line
        assert (await asyncio.wait_for(r.readline(), 20)).startswith(b"SSH-2.0-")
    code, _, _ = await limited.ssh("ed", f"ed+{TARGET_USER}@db01", "true")
    assert code == 255  # no room while four strangers sit before authentication
    # The login grace time (2 s here) ends them; then there is room again.
    for r, _ in held:
        await _until_eof(r)
    for _, w in held:
        w.close()
    code, out, err = await limited.ssh("ed", f"ed+{TARGET_USER}@db01", "echo", "in")
    assert code == 0 and out.strip() == b"in", err
    assert limited.gw.startups == {}


@contextlib.contextmanager
def _without_strict_kex() -> Iterator[None]:
    """This process's asyncssh clients stop offering strict KEX, as clients before OpenSSH
    9.6 do (only gateway-shell logins run meanwhile: no upstream connection is made)."""
    cls = asyncssh.connection.SSHClientConnection
    original = cls._get_extra_kex_algs
    cls._get_extra_kex_algs = lambda self: [b"ext-info-c"]  # type: ignore[method-assign]
    # ... nor turn it on when the server offers it (an old client does not know the name).
    cls._strict_kex = property(lambda self: False, lambda self, value: None)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        cls._get_extra_kex_algs = original  # type: ignore[method-assign]
        del cls._strict_kex  # type: ignore[attr-defined]


async def _negotiate(gateway: Gateway, **algs: list[str]) -> tuple[str, str]:
    async with asyncssh.connect(
        "127.0.0.1",
        gateway.port,
        username="ed",
        client_keys=[str(gateway.clients["ed"].key_file)],
        known_hosts=None,
        agent_path=None,
        **algs,  # type: ignore[arg-type]
    ) as conn:
        return terrapin.negotiated(conn)


CHACHA, ETM = "chacha20-poly1305@openssh.com", "hmac-sha2-256-etm@openssh.com"
CHACHA_FIRST = {
    "encryption_algs": [CHACHA, "aes128-ctr", "aes256-gcm@openssh.com"],
    "mac_algs": [ETM, "hmac-sha2-256"],
}


async def test_a_client_without_strict_kex_gets_only_terrapin_safe_algorithms(
    hard: Gateway,
) -> None:
    assert await _negotiate(hard, **CHACHA_FIRST) == (CHACHA, CHACHA)
    with _without_strict_kex():
        assert await _negotiate(hard, **CHACHA_FIRST) == ("aes128-ctr", "hmac-sha2-256")
        etm_only = {
            "encryption_algs": ["aes128-ctr"],
            "mac_algs": ["hmac-sha2-256-etm@openssh.com"],
        }
        with pytest.raises(asyncssh.KeyExchangeFailed):
            await _negotiate(hard, **etm_only)
        with pytest.raises(asyncssh.KeyExchangeFailed):
            await _negotiate(hard, encryption_algs=[CHACHA])


async def test_require_strict_kex_refuses_clients_without_it(
    db_url: str, sshd: Sshd, tmp_path: Path
) -> None:
    server = ServerConfig(
        ssh_listen=Listen("127.0.0.1", 0),
        http_listen=Listen("127.0.0.1", 0),
        data_dir=tmp_path / "data",
        node_name="strict-node",
        require_strict_kex=True,
    )
    gateway = await _harness(db_url, sshd, tmp_path, server=server)
    try:
        with _without_strict_kex(), pytest.raises(asyncssh.KeyExchangeFailed):
            await _negotiate(gateway, **CHACHA_FIRST)
        assert await _negotiate(gateway, **CHACHA_FIRST) == (CHACHA, CHACHA)
    finally:
        await gateway.node.stop("test finished")  # type: ignore[attr-defined]


async def test_a_refused_channel_never_authenticates_to_the_target(hard: Gateway) -> None:
    """The upstream connection (TCP, key exchange, host key) starts early; the vaulted
    credential is checked out and used only for an authorized channel."""
    accepted = hard.sshd.log.read_text(errors="replace").count("Accepted ")
    connections = hard.sshd.connections()
    local = free_port()
    proc = await asyncio.create_subprocess_exec(
        *hard.ssh_args("ed", f"ed+{TARGET_USER}@db01", "-N", "-L", f"{local}:127.0.0.2:9"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await eventually(lambda: hard.sshd.connections() > connections, what="the early connection")

        async def forward_tried() -> bool:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", local)
            except OSError:
                return False
            await asyncio.wait_for(reader.read(), 30)  # refused: closed without a byte
            writer.close()
            return True

        await eventually(forward_tried, what="ssh -L listening")

        async def refused() -> bool:
            return any(e.action == "forward.refused" for e in await hard.services.audit.events())

        await eventually(refused, what="the forward refused")
    finally:
        proc.kill()
        await proc.wait()
    await eventually(lambda: len(hard.gw.registry) == 0, what="the refused session ended")
    assert hard.sshd.log.read_text(errors="replace").count("Accepted ") == accepted
    actions = [e.action for e in await hard.services.audit.events()]
    assert "credential.checkout" not in actions
    # An allowed channel then authenticates, once.
    code, out, err = await hard.ssh("ed", f"ed+{TARGET_USER}@db01", "echo", "authorized")
    assert code == 0 and out.strip() == b"authorized", err
    log = hard.sshd.log.read_text(errors="replace")
    assert log.count("Accepted ") == accepted + 1
    actions = [e.action for e in await hard.services.audit.events()]
    assert actions.count("credential.checkout") == 1


async def _ended(gateway: Gateway, user: str, target: str) -> SessionRecord:
    async def done() -> SessionRecord | None:
        mine = [
            s
            for s in await gateway.services.sessions.list(SYSTEM_ACTOR)
            if s.user == user and s.target == target and not s.active
        ]
        return mine[0] if mine else None

    return await eventually(done, what=f"{user}'s session on {target} ended")


async def test_upstream_failures_end_with_their_true_reason_and_are_audited(
    hard: Gateway,
) -> None:
    wrong = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    sshd = hard.sshd
    targets = {
        "bad-key": (sshd.port, wrong, sshd.password, "target host key mismatch"),
        "no-one": (free_port(), sshd.host_key, sshd.password, "target unreachable"),
        "stale": (
            sshd.port,
            sshd.host_key,
            "not-the-password",
            "target refused the vaulted credential",
        ),
    }
    for name, (port, key, password, _) in targets.items():
        await hard.policy.add_target(
            SYSTEM_ACTOR, name, host="127.0.0.1", port=port, host_key=key, accounts=[TARGET_USER]
        )
        await hard.services.vault.set_credential(
            SYSTEM_ACTOR, name, TARGET_USER, "password", Secret(password)
        )
    for name, (*_, reason) in targets.items():
        code, _, err = await hard.ssh("ed", f"ed+{TARGET_USER}@{name}", "true")
        assert code != 0 and b"lockgate: " in err, err
        record = await _ended(hard, "ed", name)
        assert record.end_reason == reason, (name, record.end_reason)
        failures = [
            e
            for e in await hard.services.audit.events()
            if e.action == "upstream.failure" and e.subject == record.id
        ]
        assert [f.details["reason"] for f in failures] == [reason]
        ends = [
            e
            for e in await hard.services.audit.events()
            if e.action == "session.end" and e.subject == record.id
        ]
        assert [e.details["reason"] for e in ends] == [reason]
    dump = repr(await hard.services.audit.events())
    assert sshd.password not in dump and "not-the-pw" not in dump


async def test_refused_sessions_and_channels_are_audited(hard: Gateway) -> None:
    await hard.policy.lock(SYSTEM_ACTOR, "user", "ed", "under review")
    code, _, err = await hard.ssh("ed", f"ed+{TARGET_USER}@db01", "true")
    assert code != 0 and b"lockgate: " in err
    code, _, err = await hard.ssh("alice", f"alice+{TARGET_USER}@db01", "echo", "exec?")
    assert code != 0 and b"lockgate: " in err  # files only
    events = await hard.services.audit.events()
    refused = [(e.action, e.actor) for e in events if e.action.endswith(".refused")]
    assert ("session.refused", "ed") in refused and ("channel.refused", "alice") in refused
    lock = next(e for e in events if e.action == "session.refused" and e.actor == "ed")
    assert "locked" in lock.details["reason"] and lock.details["client"] == "127.0.0.1"
    # A session none of whose channels opened ends with the refusal, not "client disconnected".
    record = await _ended(hard, "alice", "db01")
    assert (record.end_reason or "").startswith("channel refused: "), record.end_reason
    ends = [
        e
        for e in await hard.services.audit.events()
        if e.action == "session.end" and e.subject == record.id
    ]
    assert [e.details["reason"] for e in ends] == [record.end_reason]


async def test_a_session_whose_recording_cannot_start_is_refused_and_ended(
    hard: Gateway,
) -> None:
    """Its start is already audited and recorded: it must not stay listed live."""
    year = hard.workdir / "recordings" / f"{datetime.now(UTC):%Y}"
    year.parent.mkdir(exist_ok=True)
    year.write_text("not a directory")  # the recording's file cannot be created
    code, _, err = await hard.ssh("ed", f"ed+{TARGET_USER}@db01", "true")
    assert code != 0 and b"lockgate: the session could not be opened" in err, err
    record = await _ended(hard, "ed", "db01")
    assert (record.end_reason or "").startswith("could not start: "), record.end_reason
    ends = [
        e
        for e in await hard.services.audit.events()
        if e.action == "session.end" and e.subject == record.id
    ]
    assert len(ends) == 1


async def test_a_session_cut_by_a_crash_is_audited_when_the_node_starts_again(
    hard: Gateway,
) -> None:
    store = hard.services.sessions
    await store.started(NewSession("se-crashed", "ssh", "ed", "db01", TARGET_USER, None, "1.2.3.4"))
    assert await store.sweep_stale() == ["se-crashed"]
    record = await store.get(SYSTEM_ACTOR, "se-crashed")
    assert not record.active and "gateway restarted" in (record.end_reason or "")
    ends = [
        e
        for e in await hard.services.audit.events()
        if e.action == "session.end" and e.subject == "se-crashed"
    ]
    assert len(ends) == 1 and "gateway restarted" in ends[0].details["reason"]


class _DyingTarget(asyncssh.SSHServer):
    """A real SSH server standing in for a target host that dies mid-session."""

    conns: list[asyncssh.SSHServerConnection] = []

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conns.append(conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return password == "dying-target-pw"


async def _forever(process: asyncssh.SSHServerProcess[str]) -> None:
    process.stdout.write("up\n")
    await asyncio.Event().wait()


async def test_a_target_that_dies_mid_session_ends_it_with_that_reason(hard: Gateway) -> None:
    _DyingTarget.conns.clear()
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.listen(
        "127.0.0.1", 0, server_factory=_DyingTarget, server_host_keys=[host_key],
        process_factory=_forever,
    )  # fmt: skip
    try:
        port = server.sockets[0].getsockname()[1]
        public = " ".join(host_key.export_public_key().decode().split()[:2])
        await hard.policy.add_target(
            SYSTEM_ACTOR, "dying", host="127.0.0.1", port=port, host_key=public,
            accounts=[TARGET_USER],
        )  # fmt: skip
        await hard.services.vault.set_credential(
            SYSTEM_ACTOR, "dying", TARGET_USER, "password", Secret("dying-target-pw")
        )
        proc = await asyncio.create_subprocess_exec(
            *hard.ssh_args("ed", f"ed+{TARGET_USER}@dying"), "anything",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"up\n"
        for conn in _DyingTarget.conns:
            conn.abort()  # the host is gone
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode != 0 and b"lockgate: the connection to the target was lost" in err
        record = await _ended(hard, "ed", "dying")
        assert record.end_reason == "target connection lost"
    finally:
        server.close()


async def test_a_refused_gateway_shell_command_is_audited(hard: Gateway) -> None:
    code, _, err = await hard.ssh(
        "ed", "ed", "request", "db01", "--for", "300d", "--reason", "forever"
    )
    assert code == 1 and b"lockgate: at most" in err, err
    refused = [e for e in await hard.services.audit.events() if e.action == "shell.refused"]
    assert [(e.actor, e.subject) for e in refused] == [("ed", "request")]
    assert refused[0].details["reason"].startswith("at most")
    assert refused[0].details["client"] == "127.0.0.1"
