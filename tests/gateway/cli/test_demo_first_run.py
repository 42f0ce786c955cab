"""``lockgate demo`` on a first run in an empty directory, as the README says to start: it
listens on loopback only, prints the gateway's host-key fingerprint and only the demo's next
steps, a login that works as pasted, and a web sign-in (password and TOTP) that works."""

from __future__ import annotations

import base64
import os
import re
import shlex
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from tests.target import free_port
from vault import totp

PY = sys.executable


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (from /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, _, state = line.split()[1:4]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":
                found.add(address)
    return found


def _sign_in(base: str, user: str, password: str, code: str) -> int:
    data = urllib.parse.urlencode(
        {"user": user, "password": password, "code": code, "next": "/"}
    ).encode()
    request = urllib.request.Request(
        base + "login", data=data, headers={"Origin": base.rstrip("/")}, method="POST"
    )

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_demo_first_run_is_loopback_with_fingerprint_and_a_working_web_sign_in(
    tmp_path: Path,
) -> None:
    ssh_port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    # Wildcard addresses, as `lockgate init` writes them: the demo still listens on loopback.
    env["LOCKGATE_SERVER_SSH_LISTEN"] = f"0.0.0.0:{ssh_port}"
    env["LOCKGATE_SERVER_HTTP_LISTEN"] = f"0.0.0.0:{http_port}"
    proc = subprocess.Popen(
        [PY, "-m", "gateway", "demo"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline()]
        while lines[-1] and "Press Ctrl-C to stop." not in lines[-1] and len(lines) < 60:
            lines.append(proc.stdout.readline())
        printed = "".join(lines)
        assert "Press Ctrl-C to stop." in printed, printed
        assert (tmp_path / "lockgate.toml").exists()
        assert "next steps" not in printed and "--role admin" not in printed  # init's, not ours

        assert _listening_addresses(ssh_port) == {"0100007F"}  # 127.0.0.1 only
        assert _listening_addresses(http_port) == {"0100007F"}

        # The fingerprint printed is the one the gateway presents.
        scanned = subprocess.run(
            ["ssh-keyscan", "-p", str(ssh_port), "-t", "ed25519", "127.0.0.1"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        keyfile = tmp_path / "scanned"
        keyfile.write_text(scanned)
        shown = subprocess.run(
            ["ssh-keygen", "-l", "-f", str(keyfile)], capture_output=True, text=True, check=True
        ).stdout.split()[1]
        assert f"host key is\n{shown} (ssh-ed25519)" in printed, (shown, printed)

        # The login as pasted (no /etc/hosts name): loopback, and it works.
        line = next(x for x in lines if x.startswith("  ssh "))
        pasted = shlex.split(line)
        assert pasted[-1].endswith("@127.0.0.1")
        quiet = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        argv = [*pasted[:-1], *quiet, "-o", "BatchMode=yes", pasted[-1]]
        done = subprocess.run([*argv, "echo demo-$((6 * 7))"], capture_output=True, timeout=60)
        assert (done.returncode, done.stdout) == (0, b"demo-42\n"), done.stderr

        # The web sign-in it prints works: the password and a code from the printed URI.
        web = re.search(r"Web: open (\S+) and sign in as demo with password (\S+)", printed)
        uri = re.search(r"otpauth://\S+", printed)
        assert web is not None and uri is not None, printed
        base, password = web.group(1), web.group(2)
        secret = urllib.parse.parse_qs(urllib.parse.urlsplit(uri.group(0)).query)["secret"][0]
        seed = base64.b32decode(secret + "=" * (-len(secret) % 8))
        assert base == f"http://127.0.0.1:{http_port}/"
        assert _sign_in(base, "demo", password, "000000") == 401
        assert _sign_in(base, "demo", password, totp.code_at(seed, datetime.now(UTC))) == 303
        proc.terminate()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
