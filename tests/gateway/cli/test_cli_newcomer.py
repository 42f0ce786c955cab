"""The ``lockgate`` command as a newcomer meets it, run as a real process on the embedded
default (``lockgate init`` in a fresh directory): help, version, options before the command,
did-you-mean, exit status 1 for refusals and 2 for bad usage, one ``lockgate:`` per message,
a quiet exit on Ctrl-C (130) and on a closed pipe, and "run lockgate init" where nothing is
configured."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import re
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.target import Sshd

PY = sys.executable
RULE = """
[[rules]]
name = "dev-prod"
roles = ["dev"]
labels = { env = "prod" }
max_duration = "4h"
approvals = 1
approver_roles = ["approver"]
"""
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBtCyfTUQFhlj0yD8czeQDRHe2prdsKr2Ayyg6vXmbE8"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}


def lockgate(cwd: Path, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "gateway", *argv],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )


@pytest.fixture(scope="module")
def here(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory after ``lockgate init``, with a rule, two users and a target."""
    cwd = tmp_path_factory.mktemp("newcomer")
    assert lockgate(cwd, "init").returncode == 0
    with (cwd / "lockgate.toml").open("a") as f:
        f.write(RULE)
    for argv in (
        ("user", "add", "alice", "--role", "dev"),
        ("user", "add", "bob", "--role", "approver"),
        ("target", "add", "db01", "--host", "10.0.0.5", "--account", "root"),
        ("target", "add", "db02", "--host", "10.0.0.6", "--account", "root", "--label", "env=prod"),
    ):
        done = lockgate(cwd, *argv, "--host-key", HOST_KEY) if argv[0] == "target" else None
        done = done or lockgate(cwd, *argv)
        assert done.returncode == 0, done.stderr
    return cwd


def one_line(stderr: str) -> str:
    assert stderr.startswith("lockgate: ") and stderr.count("\n") == 1, stderr
    assert "lockgate: lockgate:" not in stderr and "Traceback" not in stderr
    return stderr


def test_alone_it_prints_help_and_it_has_a_version(tmp_path: Path) -> None:
    alone = lockgate(tmp_path)
    assert alone.returncode == 0 and alone.stderr == ""
    assert "usage: lockgate" in alone.stdout and "request" in alone.stdout
    group = lockgate(tmp_path, "user")
    assert group.returncode == 0 and "add" in group.stdout and "list" in group.stdout
    version = lockgate(tmp_path, "--version")
    assert version.returncode == 0 and re.fullmatch(r"lockgate \d+\.\d+\.\d+\n", version.stdout)


def test_a_mistyped_command_gets_did_you_mean(tmp_path: Path) -> None:
    done = lockgate(tmp_path, "grnats")
    assert done.returncode == 2
    assert "no command 'grnats'; did you mean 'grants'" in one_line(done.stderr)
    done = lockgate(tmp_path, "user", "lsit")
    assert done.returncode == 2
    assert "did you mean 'user list'?" in one_line(done.stderr)


def test_outside_a_configured_directory_it_says_run_init(tmp_path: Path) -> None:
    done = lockgate(tmp_path, "grants")
    assert done.returncode == 1
    assert "run `lockgate init`" in one_line(done.stderr)
    assert "master.key" not in done.stderr


def test_global_options_before_the_command(here: Path, tmp_path: Path) -> None:
    config = str(here / "lockgate.toml")
    done = lockgate(tmp_path, "--config", config, "--json", "grants")
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr
    done = lockgate(tmp_path, "--config", config, "--as", "alice", "--json", "requests")
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr
    # after the command, the command's own placement still wins
    done = lockgate(tmp_path, "--as", "nobody", "grants", "--config", config, "--as", "bob")
    assert done.returncode == 0, done.stderr


def test_refusals_exit_1_and_bad_usage_2(here: Path) -> None:
    request = ("request", "db02", "--reason", "INC-1", "--as", "alice")
    cases = [
        ((*request, "--for", "5h"), 1, "at most 4h on db02 (rule dev-prod)"),
        ((*request, "--for", "1h", "--account", "admin"), 1, "db02 has no account admin"),
        (("request", "db1", "--for", "1h", "--reason", "x", "--as", "alice"), 1, "no target db1"),
        (
            ("request", "db01", "--for", "1h", "--reason", "x", "--as", "alice"),
            1,
            "an admin adds one: a [[rules]] entry",
        ),
        ((*request, "--for", "-5m"), 2, "invalid duration '-5m': must be more than zero"),
        ((*request, "--for", "forever"), 2, "invalid duration 'forever'"),
        (("request",), 2, "the following arguments are required: target"),
    ]
    for argv, status, says in cases:
        done = lockgate(here, *argv)
        assert done.returncode == status, (argv, done.stderr)
        assert says in one_line(done.stderr), (argv, done.stderr)


def test_people_read_values_not_python(here: Path) -> None:
    done = lockgate(here, "audit")
    assert done.returncode == 0, done.stderr
    assert "roles=dev" in done.stdout and "['" not in done.stdout and "{'" not in done.stdout
    assert "password=no" in done.stdout and "False" not in done.stdout
    shown = lockgate(here, "user", "show", "alice").stdout
    assert re.search(r"created_at\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\n", shown), shown
    assert re.search(r"public_keys\s+-\n", shown), shown
    target = lockgate(here, "target", "show", "db01").stdout
    assert "host_key" in target and "url" not in target and "tls_" not in target


def test_a_closed_pipe_is_quiet(here: Path) -> None:
    proc = subprocess.Popen(
        [PY, "-m", "gateway", "audit"],
        cwd=here,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # as `| head` does once it has its lines
    err = proc.stderr.read()
    assert proc.wait(120) == 141 and err == b""


def _take_terminal() -> None:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _on_a_terminal(cwd: Path, *argv: str) -> tuple[subprocess.Popen[bytes], int]:
    """``lockgate`` on a real pty of its own, as in a terminal: Ctrl-C typed there reaches it
    the way it does for a person."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [PY, "-m", "gateway", *argv],
        cwd=cwd,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=_env(),
        preexec_fn=_take_terminal,
    )
    os.close(slave)
    return proc, master


def _read_until(master: int, text: bytes, proc: subprocess.Popen[bytes]) -> bytes:
    seen = b""
    while text not in seen:
        assert proc.poll() is None, seen
        seen += os.read(master, 4096)
    return seen


def _exit_status(proc: subprocess.Popen[bytes], master: int, timeout: float = 60) -> int:
    """Wait for the process, reading its terminal meanwhile (a full pty would stall it)."""
    import select

    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            with contextlib.suppress(OSError):
                _seen.append(os.read(master, 4096))
    return proc.wait(1)


_seen: list[bytes] = []


def _rest(master: int) -> bytes:
    out = b"".join(_seen)
    _seen.clear()
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            return out
        if not chunk:
            return out
        out += chunk


def test_ctrl_c_at_the_scan_prompt_exits_130_quietly(here: Path, sshd: Sshd) -> None:
    proc, master = _on_a_terminal(
        here, "target", "add", "db09", "--host", "127.0.0.1", "--port", str(sshd.port), "--scan"
    )
    try:
        _read_until(master, b"Pin this key? [y/N]", proc)
        os.write(master, b"\x03")  # Ctrl-C, through the terminal's line discipline
        assert _exit_status(proc, master) == 130
        rest = _rest(master)
        assert b"Traceback" not in rest and b"Error" not in rest, rest
        # the terminal was given back as it was found: it still echoes
        assert termios.tcgetattr(master)[3] & termios.ECHO
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


def _recording_with_a_pause(config: Path) -> str:
    """A sealed recording with a long pause after its first line (a real recorder writing
    to the configured directory and database)."""
    from gateway.config import load_config
    from gateway.services import open_services
    from recorder.recorder import Recorder

    async def record() -> str:
        cfg = load_config(config)
        services = await open_services(cfg)
        clock = [1000.0]
        try:
            recorder = Recorder(cfg.recordings_path, services.maker, clock=lambda: clock[0])
            rec = await recorder.start("se-pause", meta={"user": "alice", "target": "db01"})
            rec.output(b"first line\r\n")
            clock[0] += 3600
            rec.output(b"an hour later\r\n")
            await rec.close("done")
            await recorder.aclose()
        finally:
            await services.aclose()
        return "se-pause"

    return asyncio.run(record())


def test_ctrl_c_stops_play(here: Path) -> None:
    session = _recording_with_a_pause(here / "lockgate.toml")
    proc, master = _on_a_terminal(here, "play", session, "--idle-limit", "600")
    try:
        _read_until(master, b"first line", proc)
        os.write(master, b"\x03")  # in the middle of a 600 s pause
        assert _exit_status(proc, master) == 130
        assert b"an hour later" not in _rest(master)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)


def test_request_wait_on_the_host(here: Path) -> None:
    ask = ("request", "db02", "--for", "1h", "--reason", "INC-2", "--as", "alice", "--wait")
    proc = subprocess.Popen(
        [PY, "-m", "gateway", *ask, "--json"],
        cwd=here,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "is pending approval; waiting" in line, line
    match = re.search(r"request (rq-[0-9a-f]+)", line)
    assert match is not None
    approved = lockgate(here, "approve", match.group(1), "--as", "bob", "--comment", "ok")
    assert approved.returncode == 0, approved.stderr
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and json.loads(out)["state"] == "approved"

    waiting, master = _on_a_terminal(here, *ask)
    try:
        seen = _read_until(master, b"(Ctrl-C stops waiting", waiting)
        rid = re.search(rb"request (rq-[0-9a-f]+)", seen)
        assert rid is not None
        os.write(master, b"\x03")
        assert _exit_status(waiting, master) == 130
        assert b"still pending" in _rest(master)
    finally:
        os.close(master)
        if waiting.poll() is None:
            waiting.kill()
    pending = json.loads(lockgate(here, "requests", "--pending", "--json").stdout)
    assert rid.group(1).decode() in [r["id"] for r in pending]
