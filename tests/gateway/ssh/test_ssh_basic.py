"""Through the gateway with real OpenSSH clients against a real sshd."""

from __future__ import annotations

import asyncio
import hashlib
import os
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path

import asyncssh

from gateway.ssh import fastpath
from tests.eventually import eventually
from tests.gateway.ssh.conftest import TARGET_USER, Gateway
from tests.target import SCRATCH

LOGIN = f"alice+{TARGET_USER}@db01"


def scp_options(gateway: Gateway) -> list[str]:
    """Options shared by the scp and sftp clients in these tests."""
    return [
        "-P",
        str(gateway.port),
        "-i",
        str(gateway.clients["alice"].key_file),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
        "-F",
        "/dev/null",
    ]


def asyncssh_client(
    gateway: Gateway, **options: object
) -> AbstractAsyncContextManager[asyncssh.SSHClientConnection]:
    """An asyncssh client of the gateway as alice on LOGIN, for what OpenSSH cannot do here."""
    return asyncssh.connect(
        "127.0.0.1",
        gateway.port,
        username=LOGIN,
        client_keys=[str(gateway.clients["alice"].key_file)],
        known_hosts=None,
        config=None,
        agent_path=None,
        **options,
    )


async def test_no_grant_refused_without_contacting_target(gateway: Gateway) -> None:
    before = gateway.sshd.connections()
    code, out, err = await gateway.ssh("alice", LOGIN, "id")
    assert code != 0
    text = err.decode()
    assert text.startswith("lockgate: no active grant for alice -> lgtest@db01; request one: ")
    assert text.count("\n") == 1
    assert out == b""
    assert gateway.sshd.connections() == before


async def test_exec_output_and_exit_status(gateway: Gateway) -> None:
    await gateway.grant("alice")
    code, out, err = await gateway.ssh("alice", LOGIN, "echo hello; id -un; exit 7")
    assert code == 7, err
    assert out == f"hello\n{TARGET_USER}\n".encode()
    code, out, _ = await gateway.ssh("alice", LOGIN, "cat", stdin=b"piped stdin\n")
    assert code == 0 and out == b"piped stdin\n"
    code, _, err = await gateway.ssh("alice", LOGIN, "echo to-stderr >&2; kill -TERM $$")
    assert code == 255 or code == 143 or b"to-stderr" in err
    assert b"to-stderr" in err
    assert gateway.sshd.password.encode() not in out + err


async def test_scp_and_sftp_byte_exact(gateway: Gateway, tmp_path: Path) -> None:
    await gateway.grant("alice")
    payload = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "payload.bin"
    src.write_bytes(payload)
    base = scp_options(gateway)
    code, _, err = await gateway.run(["scp", *base, str(src), f"{LOGIN}@127.0.0.1:{SCRATCH}up.bin"])
    assert code == 0, err
    back = tmp_path / "back.bin"
    code, _, err = await gateway.run(
        ["scp", *base, f"{LOGIN}@127.0.0.1:{SCRATCH}up.bin", str(back)]
    )
    assert code == 0, err
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(payload).digest()
    batch = tmp_path / "batch"
    batch.write_text(
        f"put {src} {SCRATCH}sftp.bin\nget {SCRATCH}sftp.bin "
        f"{tmp_path / 'sftp-back.bin'}\nrm {SCRATCH}sftp.bin\n"
    )
    code, _, err = await gateway.run(["sftp", *base, "-b", str(batch), f"{LOGIN}@127.0.0.1"])
    assert code == 0, err
    assert (tmp_path / "sftp-back.bin").read_bytes() == payload


async def test_sftp_operations_are_recorded(gateway: Gateway, tmp_path: Path) -> None:
    from recorder.store import RecordingStore

    await gateway.grant("alice")
    payload = os.urandom(200_000)
    src = tmp_path / "report.bin"
    src.write_bytes(payload)
    base = scp_options(gateway)
    code, _, err = await gateway.run(
        ["scp", *base, str(src), f"{LOGIN}@127.0.0.1:{SCRATCH}report.bin"]
    )
    assert code == 0, err
    code, _, err = await gateway.run(
        ["scp", *base, f"{LOGIN}@127.0.0.1:{SCRATCH}report.bin", str(tmp_path / "again.bin")]
    )
    assert code == 0, err
    store = RecordingStore(gateway.workdir / "recordings", gateway.services.maker)
    ops = []

    async def sealed(session_id: str) -> bool:
        return (await store.get(session_id)).sealed

    for info in await store.recent():
        # the session closes just after the client exits
        await eventually(partial(sealed, info.session_id), what=f"{info.session_id} sealed")
        await store.index(info.session_id)
        ops += [e for e in await store.timeline(info.session_id) if e["kind"] == "sftp"]
    await store.aclose()
    assert {
        "op": "upload",
        "path": f"{SCRATCH}report.bin",
        "bytes": 200_000,
        "result": "ok",
    } in [
        {k: e[k] for k in ("op", "path", "bytes", "result")}
        for e in ops
        if e.get("op") in ("upload", "download")
    ]
    assert any(e.get("op") == "download" and e.get("bytes") == 200_000 for e in ops)
    audited = [
        (e.action, e.details.get("path"), e.details.get("bytes"), e.details.get("target"))
        for e in await gateway.services.audit.events()
        if e.action.startswith("sftp.")
    ]
    assert ("sftp.upload", f"{SCRATCH}report.bin", 200_000, "db01") in audited
    assert ("sftp.download", f"{SCRATCH}report.bin", 200_000, "db01") in audited


async def test_sftp_stops_when_its_audit_cannot_be_written(
    gateway: Gateway, tmp_path: Path
) -> None:
    """No audit, no transfer: an SFTP operation that cannot be audited ends the session."""
    import sqlalchemy as sa

    from gateway.db.tables import audit_head, sessions

    await gateway.grant("alice")
    src = tmp_path / "x.bin"
    src.write_bytes(b"x" * 1000)
    proc = await asyncio.create_subprocess_exec(
        "sftp",
        *scp_options(gateway),
        "-b",
        "-",
        f"{LOGIN}@127.0.0.1",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"pwd\n")
    await proc.stdin.drain()
    await asyncio.wait_for(proc.stdout.readuntil(b"Remote working directory"), 30)
    async with gateway.services.maker() as db, db.begin():
        head = (await db.execute(sa.select(audit_head))).one()
        await db.execute(sa.delete(audit_head))
    try:
        proc.stdin.write(f"put {src} {SCRATCH}unaudited.bin\n".encode())
        await proc.stdin.drain()
        # the upload is audited when its file is closed
        await eventually(
            lambda: not gateway.gw.registry.sessions, interval=0.1, what="the session to end"
        )
        # The client is still connected and idle: only the gateway can have ended the session
        # (and its end cannot be recorded either: the audit log is down).
        assert not gateway.gw.registry.sessions
        proc.stdin.write(b"ls /tmp\n")  # the next command finds the connection gone
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 30)
        assert proc.returncode != 0
    finally:
        async with gateway.services.maker() as db, db.begin():
            await db.execute(sa.insert(audit_head).values(**head._mapping))
    async with gateway.services.maker() as db:
        assert (await db.execute(sa.select(sessions.c.end_reason))).scalars().all() == [None]
    events = await gateway.services.audit.events()
    assert not [e for e in events if e.action.startswith("sftp.")]


async def test_live_session_is_searchable_before_it_ends(gateway: Gateway) -> None:
    import sqlalchemy as sa

    from recorder.follow import LiveIndexer
    from recorder.store import RecordingStore
    from recorder.tables import text_lines

    await gateway.grant("alice")
    proc = await asyncio.create_subprocess_exec(
        *gateway.ssh_args("alice", LOGIN),
        "echo live-$((6 * 7))-marker; sleep 60",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"live-42-marker\n"
    (session_id,) = list(gateway.gw.registry.sessions)
    store = RecordingStore(gateway.workdir / "recordings", gateway.services.maker)
    follower = LiveIndexer(gateway.gw.recorder, store, interval=3600)
    try:
        gateway.gw.recorder.live[session_id].flush()  # else up to a second in memory
        assert await follower.follow_once() == [session_id]
        async with gateway.services.maker() as db:  # this harness has no full-text table
            lines = (
                await db.execute(
                    sa.select(text_lines.c.kind, text_lines.c.line).where(
                        text_lines.c.session_id == session_id
                    )
                )
            ).all()
        assert ("screen", "live-42-marker") in lines
        assert ("command", "echo live-$((6 * 7))-marker; sleep 60") in lines
        assert len(gateway.gw.registry) == 1  # still live
    finally:
        await gateway.gw.registry.terminate(session_id, "test over")
        await asyncio.wait_for(proc.communicate(), 30)
        await store.aclose()


async def test_weak_algorithms_refused_and_strict_kex(gateway: Gateway) -> None:
    """A client limited to a weak algorithm finds no match; a modern one agrees on strict key
    exchange (the Terrapin countermeasure) with the gateway."""
    await gateway.grant("alice")
    for weak in (
        ("-o", "KexAlgorithms=diffie-hellman-group1-sha1"),
        ("-o", "KexAlgorithms=diffie-hellman-group14-sha1"),
        ("-o", "Ciphers=aes128-cbc"),
        ("-o", "Ciphers=aes128-ctr", "-o", "MACs=hmac-sha1"),
        ("-o", "HostKeyAlgorithms=ssh-rsa"),
    ):
        code, out, err = await gateway.ssh("alice", LOGIN, "echo reached", extra=("-v", *weak))
        assert (code, out) == (255, b""), weak
        assert b"no matching" in err, (weak, err)
    code, out, err = await gateway.ssh("alice", LOGIN, "echo reached", extra=("-vvv",))
    assert (code, out) == (0, b"reached\n"), err
    assert b"will use strict KEX ordering" in err


async def test_post_quantum_key_exchange_offered(gateway: Gateway) -> None:
    """A client that speaks ML-KEM (OpenSSH 9.9+; here asyncssh) gets the hybrid exchange."""
    await gateway.grant("alice")
    async with asyncssh_client(gateway, kex_algs=["mlkem768x25519-sha256"]) as conn:
        result = await conn.run("echo pq", check=True)
    assert result.stdout == "pq\n"


async def test_bulk_both_ways_with_each_client_cipher(gateway: Gateway) -> None:
    """4 MB each way through ``cat`` with each cipher the client can pick, byte for byte, in
    reads far larger than a packet (the gateway parses them in steps and writes a batch of
    packets at once); no empty MSG_IGNORE reaches the client (OpenSSH logs its type, 2)."""
    await gateway.grant("alice")
    payload = os.urandom(4 * 1024 * 1024 + 5)
    chacha, rekey = "chacha20-poly1305@openssh.com", ("-o", "RekeyLimit=1M")
    runs: list[tuple[str, tuple[str, ...]]] = [(chacha, ()), ("aes128-gcm@openssh.com", ())]
    runs += [("aes256-ctr", ()), (chacha, rekey)]
    for cipher, options in runs:  # the last one has the client re-key every megabyte
        code, out, err = await gateway.ssh(
            "alice", LOGIN, "cat", stdin=payload, extra=("-c", cipher, "-vvv", *options)
        )
        assert code == 0, err[-2000:]
        assert hashlib.sha256(out).digest() == hashlib.sha256(payload).digest(), cipher
        log = err.decode(errors="replace")
        assert f"cipher: {cipher}" in log
        if fastpath.installed():  # stock asyncssh sends one before every packet
            assert "receive packet: type 2\r\n" not in log and "receive packet: type 2\n" not in log
        assert "receive packet: type 20" in log  # the -vvv lines it checks are there
        assert log.count("SSH2_MSG_NEWKEYS received") >= (5 if options else 1)


async def test_a_client_that_stops_reading_pauses_the_target(gateway: Gateway) -> None:
    """Flow control end to end: while the person's client reads nothing, the gateway takes
    no more from the target than the two channel windows and its buffers hold; when the
    client reads again, every byte arrives."""
    await gateway.grant("alice")
    total = 64 * 1024 * 1024
    received = 0
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    class Reader(asyncssh.SSHClientSession[bytes]):
        def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
            nonlocal received
            received += len(data)

        def connection_lost(self, exc: Exception | None) -> None:
            done.set_result(None)

    async with asyncssh_client(gateway) as conn:
        chan, _ = await conn.create_session(Reader, f"head -c {total} /dev/zero", encoding=None)
        chan.pause_reading()
        (session,) = gateway.gw.registry.sessions.values()
        seen: list[int] = []

        def held() -> bool:  # the target has been held for half a second
            seen.append(session.bytes_down)  # type: ignore[attr-defined]
            return len(seen) > 5 and seen[-1] == seen[-6] > 0

        await eventually(held, interval=0.1, what="the target held back")
        assert 0 < seen[-1] == seen[-6] < 16 * 1024 * 1024
        chan.resume_reading()
        await asyncio.wait_for(done, 60)
        assert received == total and chan.get_exit_status() == 0
