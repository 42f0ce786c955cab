"""What a command imports before it runs: ``--help``, a usage error and a command sent
through the API (those of ``gateway.cli.remote``) start without the database, SSH and web
layers, and a command run on the host without the SSH and HTTP client libraries (each
``lockgate`` is a new process: these imports were most of its start-up)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("sqlalchemy", "asyncssh", "pyte", "gateway.services", "gateway.web.app")

PROBE = """
import contextlib, io, sys
from gateway.cli.main import handler_of, main
from gateway.cli.parser import build_parser
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out):
    assert main(["--help"], out, err) == 0
assert main(["user", "lst"], out, err) == 2
import gateway.cli.remote
for argv in (["user", "list"], ["notifications", "list"], ["report", "--since", "7d"]):
    handler_of(build_parser().parse_args(argv))
print(" ".join(m for m in {heavy!r} if m in sys.modules))
"""


def test_help_usage_errors_and_remote_commands_skip_the_heavy_layers() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_a_command_run_here_opens_its_services_without_ssh_or_http_clients() -> None:
    """A command run on the host opens the services (database, policy, vault); asyncssh and
    aiohttp are imported only where a key is parsed or a peer is called."""
    probe = (
        "import sys, gateway.services, gateway.cli.admin, gateway.cli.access\n"
        "print(' '.join(m for m in ('asyncssh', 'aiohttp', 'pyte') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_a_command_run_here_loads_them() -> None:
    """The probe above can see them: a host command's handler module does import them."""
    probe = PROBE.replace('["user", "list"]', '["recordings", "verify"]').replace(
        "import gateway.cli.remote\n", "import gateway.cli.recordings, recorder.store\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe.format(heavy=HEAVY)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "sqlalchemy" in done.stdout.split()
