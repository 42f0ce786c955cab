"""``lockgate serve`` as a real process: readiness, metrics, kills issued by the CLI in another
process reaching the node through the database, and a clean SIGTERM shutdown."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.eventually import eventually_blocking
from tests.gateway.ssh.conftest import TARGET_USER, Sshd, free_port

PY = sys.executable


@dataclass
class Served:
    config: Path
    env: dict[str, str]
    ssh_port: int
    http_port: int
    key: Path
    proc: subprocess.Popen[str]

    def cli(self, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PY, "-m", "gateway", *argv, "--config", str(self.config)],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )

    def ssh(self, *command: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                "ssh",
                "-p",
                str(self.ssh_port),
                "-i",
                str(self.key),
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-F",
                "/dev/null",
                "-o",
                "IdentitiesOnly=yes",
                f"alice+{TARGET_USER}@db01@127.0.0.1",
                *command,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _listen_on(config: Path, ssh_port: int, http_port: int) -> None:
    """Point a config written by ``lockgate init`` at free loopback ports."""
    config.write_text(
        config.read_text()
        .replace('"0.0.0.0:2222"', f'"127.0.0.1:{ssh_port}"')
        .replace('"127.0.0.1:8080"', f'"127.0.0.1:{http_port}"')
    )


def _start(command: str, config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """``lockgate serve`` or ``lockgate demo`` in its own process, output piped."""
    return subprocess.Popen(
        [PY, "-m", "gateway", command, "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture
def served(tmp_path: Path, sshd: Sshd, db_url: str) -> Iterator[Served]:
    ssh_port, http_port = free_port(), free_port()
    config = tmp_path / "lockgate.toml"
    env = {**os.environ, "LOCKGATE_DATABASE_URL": db_url, "LOCKGATE_SERVER_WORKERS": "2"}
    run = lambda *a, stdin="": subprocess.run(  # noqa: E731
        [PY, "-m", "gateway", *a, "--config", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run("init", "--data-dir", "data").returncode == 0
    with config.open("a") as f:
        f.write(
            '\n[[rules]]\nname = "dev"\nroles = ["dev"]\napprovals = 0\nrequire_reason = false\n'
        )
    _listen_on(config, ssh_port, http_port)
    key = tmp_path / "id_alice"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    assert run("user", "add", "alice", "--role", "dev", "--key", f"{key}.pub").returncode == 0
    assert (
        run(
            "target",
            "add",
            "db01",
            "--host",
            "127.0.0.1",
            "--port",
            str(sshd.port),
            "--account",
            TARGET_USER,
            "--host-key",
            sshd.host_key,
        ).returncode
        == 0
    )
    assert (
        run(
            "credential", "set", "db01", TARGET_USER, "--password-stdin", stdin=sshd.password + "\n"
        ).returncode
        == 0
    )
    proc = _start("serve", config, env)
    assert proc.stdout is not None
    banner = proc.stdout.readline()
    assert banner.startswith("Lockgate node"), banner + proc.stdout.read()
    served = Served(config, env, ssh_port, http_port, key, proc)
    try:
        yield served
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _wait_line(proc: subprocess.Popen[bytes]) -> bytes:
    assert proc.stdout is not None
    return proc.stdout.readline()


def _session_id(served: Served) -> str:
    def active() -> list[dict[str, object]]:
        result = served.cli("sessions", "--active", "--json")
        return list(json.loads(result.stdout or "[]"))

    rows = eventually_blocking(active, what="a live session listed by the CLI")
    return str(rows[0]["id"])


def test_serve_health_terminate_revoke_and_shutdown(served: Served) -> None:
    assert _get(served.http_port, "/healthz")[0] == 200
    status, body = _get(served.http_port, "/readyz")
    assert status == 200 and json.loads(body)["checks"] == {
        "database": True,
        "vault": True,
        "listeners": True,
        "workers": True,
    }

    # terminate from another process
    client = served.ssh("echo up; sleep 60")
    assert _wait_line(client) == b"up\n"
    sid = _session_id(served)
    result = served.cli("terminate", sid, "--reason", "testing terminate", "--json")
    assert result.returncode == 0, result.stderr
    ended = json.loads(result.stdout)  # shown as it ended, not as it was asked to end
    assert ended["id"] == sid and ended["ended_at"] is not None
    assert "testing terminate" in ended["end_reason"] and "lockgate:" not in result.stderr
    _, err = client.communicate(timeout=30)
    assert b"[lockgate] session terminated: terminated by lockgate: testing terminate" in err
    assert client.returncode != 0

    # revoke from another process
    client = served.ssh("echo up; sleep 60")
    assert _wait_line(client) == b"up\n"
    grants = json.loads(served.cli("grants", "--active", "--json").stdout)
    assert served.cli("revoke", grants[0]["id"], "--reason", "no longer needed").returncode == 0
    _, err = client.communicate(timeout=30)
    assert b"session terminated: grant revoked by lockgate: no longer needed" in err

    # the sealed recordings are indexed in the worker process: search, export, verify
    def both_found() -> list[dict[str, object]] | None:
        found = json.loads(served.cli("recordings", "search", "echo up", "--json").stdout)
        return list(found) if len(found) >= 2 else None

    hits = eventually_blocking(both_found, interval=0.1, what="both recordings found by search")
    assert {h["session"] for h in hits} >= {sid}
    cast = served.cli("recordings", "export", sid).stdout.splitlines()
    assert json.loads(cast[0])["version"] == 2
    assert any(json.loads(e)[1] == "o" and "up" in json.loads(e)[2] for e in cast[1:])
    assert served.cli("recordings", "verify").returncode == 0

    status, body = _get(served.http_port, "/metrics")
    assert status == 200 and "lockgate_kills_total" in body and "lockgate_sessions_active" in body

    # SIGTERM: live sessions are told, recordings sealed, nothing left marked live
    client = served.ssh("echo up; sleep 60")
    assert _wait_line(client) == b"up\n"
    served.proc.send_signal(signal.SIGTERM)
    _, err = client.communicate(timeout=30)
    assert b"[lockgate] session terminated: gateway shutdown" in err
    assert served.proc.wait(30) == 0
    assert json.loads(served.cli("sessions", "--active", "--json").stdout) == []
    verify = served.cli("audit", "verify")
    assert verify.returncode == 0, verify.stderr
    recording = next((served.config.parent / "data" / "recordings").rglob(f"{sid}.lgrec"))
    data = bytearray(recording.read_bytes())
    data[len(data) // 2] ^= 0x01
    recording.write_bytes(bytes(data))
    bad = served.cli("recordings", "verify", sid)
    assert bad.returncode == 1 and sid in bad.stdout


def test_serve_refuses_without_master_key(served: Served, tmp_path: Path) -> None:
    served.proc.send_signal(signal.SIGTERM)
    served.proc.wait(30)
    (tmp_path / "data" / "master.key").rename(tmp_path / "elsewhere.key")
    result = subprocess.run(
        [PY, "-m", "gateway", "serve", "--config", str(served.config)],
        capture_output=True,
        text=True,
        env=served.env,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("lockgate: vault cannot be unsealed")
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_database_it_cannot_write_and_says_why(tmp_path: Path) -> None:
    """Fail closed with the driver's reason in one line (and no password), not a traceback:
    a SQLite file another process holds the write lock of, and a PostgreSQL URL nobody
    answers. One line only: the supervisor of the default two workers once raced asyncio's
    child watcher to reap the refusing worker, and the watcher then logged a line of its own
    (a race: this catches it only sometimes)."""
    config = tmp_path / "lockgate.toml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    init = [PY, "-m", "gateway", "init", "--data-dir", "data", "--config", str(config)]
    assert subprocess.run(init, capture_output=True, env=env, timeout=120).returncode == 0
    db = tmp_path / "data" / "lockgate.db"
    locker = subprocess.Popen(
        [PY, "-c", "import sqlite3, sys\n"
         "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "db.execute('BEGIN IMMEDIATE'); print('locked', flush=True); sys.stdin.readline()",
         str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
        for url, reason in (
            (f"sqlite+aiosqlite:///{db}?timeout=1", "OperationalError: database is locked"),
            (f"postgresql+asyncpg://lg:pw-{os.getpid()}@127.0.0.1:{free_port()}/x", "unreachable"),
        ):
            run = [PY, "-m", "gateway", "serve", "--config", str(config)]
            done = subprocess.run(
                run, capture_output=True, text=True, timeout=120,
                env={**env, "LOCKGATE_DATABASE_URL": url},
            )  # fmt: skip
            [line] = done.stderr.splitlines()
            assert done.returncode == 1 and line.startswith("lockgate: "), done.stderr
            assert reason in line, done.stderr
            assert f"pw-{os.getpid()}" not in done.stderr + done.stdout
    finally:
        locker.communicate("\n", timeout=30)


def test_demo_prints_an_ssh_line_that_works_pasted(tmp_path: Path) -> None:
    """The README's run command on the embedded default (SQLite, local recordings, file master
    key): the line it prints, pasted as it is, runs a command and a pty shell on the demo
    target through the gateway, both recorded as sessions; SIGTERM stops it cleanly."""
    ssh_port, http_port = free_port(), free_port()
    config = tmp_path / "lockgate.toml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    init = [PY, "-m", "gateway", "init", "--data-dir", "data", "--config", str(config)]
    assert subprocess.run(init, capture_output=True, env=env, timeout=120).returncode == 0
    _listen_on(config, ssh_port, http_port)
    proc = _start("demo", config, env)
    try:
        assert proc.stdout is not None
        printed = [proc.stdout.readline()]
        while printed[-1] and not printed[-1].startswith("  ssh ") and len(printed) < 40:
            printed.append(proc.stdout.readline())
        assert printed[-1].startswith("  ssh "), "".join(printed)
        pasted = shlex.split(printed[-1])
        assert pasted[:3] == ["ssh", "-p", str(ssh_port)]
        # Only so that this test neither asks nor writes ~/.ssh/known_hosts:
        quiet = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        argv = [*pasted[:-1], *quiet, "-o", "BatchMode=yes", pasted[-1]]
        done = subprocess.run([*argv, "echo demo-$((6 * 7))"], capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout == b"demo-42\n"
        shell = subprocess.run(
            [*argv, "-tt"], input=b"echo pty-$((6 * 7))\nexit\n", capture_output=True, timeout=60
        )
        assert shell.returncode == 0, shell.stderr
        assert b"pty-42" in shell.stdout
        listed = subprocess.run(
            [PY, "-m", "gateway", "sessions", "--json", "--config", str(config)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        sessions = json.loads(listed.stdout)
        assert [(s["user"], s["target"]) for s in sessions] == [("demo", "demo")] * 2
        proc.terminate()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
