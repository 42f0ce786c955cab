"""Direct sshd vs through Lockgate, measured in one run. Not a test: prints a table.

    python -m bench.ssh [--quick] [--pairs 3] [--sessions 200] [--database-url URL]
    python -m bench.ssh --workers N [--sessions 200] [--kills 50]   # 1 worker vs N

Starts its own sshd (root needed: it creates the account ``lgbench``), initialises a
gateway in a temporary directory, runs ``lockgate serve`` as a separate process (so its
RSS is the gateway's alone), and measures with real OpenSSH clients (throughput, setup)
and asyncssh clients (keystroke echo, idle sessions, kill latency).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncssh

PY = sys.executable
ACCOUNT = "lgbench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sh(*argv: str, stdin: str = "", env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed: {result.stderr.strip()}")
    return result.stdout


class Setup:
    def __init__(self, work: Path, database_url: str | None) -> None:
        self.work = work
        self.password = "bench-" + secrets.token_urlsafe(12)
        self.sshd_port, self.gw_port, self.http_port = free_port(), free_port(), free_port()
        self.env = {**os.environ}
        if database_url:
            self.env["LOCKGATE_DATABASE_URL"] = database_url
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        w = self.work
        if subprocess.run(["id", ACCOUNT], capture_output=True).returncode:
            sh("useradd", "-m", "-s", "/bin/bash", ACCOUNT)
        sh("chpasswd", stdin=f"{ACCOUNT}:{self.password}")
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(w / "host_key"))
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(w / "client"))
        keys = w / "keys"
        keys.mkdir()
        shutil.copy(w / "client.pub", keys / ACCOUNT)
        (w / "sshd_config").write_text(
            f"Port {self.sshd_port}\nListenAddress 127.0.0.1\nHostKey {w / 'host_key'}\n"
            f"PidFile {w / 'sshd.pid'}\nAuthorizedKeysFile {keys}/%u\nPasswordAuthentication "
            "yes\nUsePAM no\nStrictModes no\nMaxStartups 1000\nMaxSessions 1000\n"
            "Subsystem sftp internal-sftp\nLogLevel ERROR\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)
        self.procs.append(
            subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(w / "sshd_config")])
        )
        cfg = w / "lockgate.toml"

        def run(*a: str, stdin: str = "") -> str:
            return sh(
                PY,
                "-m",
                "gateway",
                *a,
                "--config",
                str(cfg),
                stdin=stdin,
                env=self.env,
            )

        run("init", "--data-dir", "data")
        text = cfg.read_text().replace('"0.0.0.0:2222"', f'"127.0.0.1:{self.gw_port}"')
        text = text.replace('"127.0.0.1:8080"', f'"127.0.0.1:{self.http_port}"')
        cfg.write_text(
            text + '\n[[rules]]\nname = "bench"\nroles = ["bench"]\napprovals = 0\n'
            'require_reason = false\nmax_duration = "1d"\ndefault_duration = "1d"\n'
            # hundreds of sessions start at once from this one address
            "\n[limits]\nssh_max_startups = 1024\n"
        )
        run("user", "add", "alice", "--role", "bench", "--key", str(w / "client.pub"))
        host_key = " ".join((w / "host_key.pub").read_text().split()[:2])
        run(
            "target",
            "add",
            "t1",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.sshd_port),
            "--account",
            ACCOUNT,
            "--host-key",
            host_key,
        )
        run("credential", "set", "t1", ACCOUNT, "--password-stdin", stdin=self.password + "\n")
        self.config = cfg
        self.serve_log = (w / "serve.log").open("wb")
        serve = subprocess.Popen(
            [PY, "-m", "gateway", "serve", "--config", str(cfg)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=self.serve_log,
        )
        self.procs.append(serve)
        self.serve = serve
        assert serve.stdout is not None
        serve.stdout.readline()
        time.sleep(0.3)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait(30)

    def ssh(self, gateway: bool, *extra: str) -> list[str]:
        port = self.gw_port if gateway else self.sshd_port
        login = f"alice+{ACCOUNT}@t1" if gateway else ACCOUNT
        return [
            "ssh",
            "-p",
            str(port),
            "-i",
            str(self.work / "client"),
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "IdentitiesOnly=yes",
            *extra,
            f"{login}@127.0.0.1",
        ]

    async def client(self, gateway: bool) -> asyncssh.SSHClientConnection:
        return await asyncssh.connect(
            "127.0.0.1",
            self.gw_port if gateway else self.sshd_port,
            username=f"alice+{ACCOUNT}@t1" if gateway else ACCOUNT,
            client_keys=[str(self.work / "client")],
            known_hosts=None,
            config=None,
            agent_path=None,
        )


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def bulk(s: Setup, gateway: bool, megabytes: int, pty: bool, *extra: str) -> float:
    if pty:
        command = f"cat /tmp/lockgate-bench-{megabytes}.txt"
        return megabytes / timed([*s.ssh(gateway, "-tt", *extra), command])
    return megabytes / timed([*s.ssh(gateway, *extra), f"head -c {megabytes}M /dev/zero"])


async def keystrokes(s: Setup, gateway: bool, sessions: int, per_session: int) -> list[float]:
    conns = await asyncio.gather(*(s.client(gateway) for _ in range(sessions)))
    latencies: list[float] = []

    async def one(conn: asyncssh.SSHClientConnection) -> None:
        proc = await conn.create_process(
            "stty -echo raw; printf R; exec cat", term_type="xterm", encoding=None
        )
        # Nothing is typed before the terminal's own echo is off: a byte echoed twice (by
        # the tty and by cat) would pair every later read with the previous keystroke.
        await proc.stdout.readuntil(b"R")
        for _ in range(per_session):
            start = time.perf_counter()
            proc.stdin.write(b"k")
            await proc.stdout.readexactly(1)
            latencies.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(0.1)  # ~10 keystrokes a second per session
        proc.close()

    results = await asyncio.gather(*(one(c) for c in conns), return_exceptions=True)
    for conn in conns:
        conn.close()
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        print(f"  !! {len(failed)} of {sessions} sessions failed: {failed[0]!r}", flush=True)
    return latencies


async def wait_indexed(s: Setup) -> None:
    """Let the gateway seal and index every recording, so the indexer does not load the next
    measurement (a recording not yet sealed when this starts counts as pending too)."""
    import sqlalchemy as sa

    from gateway.config import load_config
    from gateway.services import open_services
    from recorder.tables import recordings

    services = await open_services(load_config(s.config))
    try:
        for _ in range(1200):
            async with services.maker() as db:
                pending = (
                    await db.execute(
                        sa.select(sa.func.count())
                        .select_from(recordings)
                        .where(
                            sa.or_(
                                recordings.c.sha256.is_(None),
                                recordings.c.indexed_to < recordings.c.size,
                            )
                        )
                    )
                ).scalar()
            if not pending:
                return
            await asyncio.sleep(0.5)
    finally:
        await services.aclose()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def active_sessions(s: Setup) -> list[dict[str, str]]:
    import json

    listing = sh(
        PY, "-m", "gateway", "sessions", "--active", "--json", "--config", str(s.config), env=s.env
    )
    sessions: list[dict[str, str]] = json.loads(listing)
    return sessions


async def idle_rss(s: Setup, count: int) -> tuple[float, float]:
    """KB of gateway RSS per idle pty session, and the seconds until all of them were
    recorded as ended after their clients closed at once (the kill-latency rounds that
    follow must not queue behind that teardown)."""
    before = rss_kb(s.serve.pid)
    conns = []
    for i in range(0, count, 50):
        batch = await asyncio.gather(*(s.client(True) for _ in range(min(50, count - i))))
        for conn in batch:
            await conn.create_process("sleep 600", term_type="xterm")
        conns += batch
    await asyncio.sleep(2)
    after = rss_kb(s.serve.pid)
    for conn in conns:
        conn.close()
    closed = time.perf_counter()
    for _ in range(600):
        if not active_sessions(s):
            break
        await asyncio.sleep(0.5)
    return (after - before) / count, time.perf_counter() - closed


async def kill_latency(s: Setup, rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        conn = await s.client(True)
        proc = await conn.create_process("echo up; sleep 600")
        await proc.stdout.readline()
        sid = active_sessions(s)[0]["id"]
        # The CLI's own start-up is not the kill path: time from the request being
        # committed (what `lockgate terminate` does) to the client seeing the channel close.
        from gateway.cluster.bus import ClusterBus
        from gateway.config import load_config
        from gateway.services import open_services

        services = await open_services(load_config(s.config))
        bus = ClusterBus(services.maker, "bench")
        start = time.perf_counter()
        await bus.send("terminate", {"session": sid, "reason": "bench"})
        await proc.wait_closed()
        samples.append((time.perf_counter() - start) * 1000)
        await services.aclose()
        conn.close()
    return samples


class Rows(list[tuple[str, str, str, str]]):
    """Rows printed as they are measured, then as one aligned table."""

    def append(self, row: tuple[str, str, str, str]) -> None:
        print("  ..", " | ".join(row), flush=True)
        super().append(row)

    def table(self) -> None:
        head = ("measure", "direct sshd", "via Lockgate", "ratio / added")
        widths = [max(len(r[i]) for r in [head, *self]) for i in range(4)]
        for row in [head, *self]:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer sessions")
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--database-url")
    parser.add_argument("--pairs", type=int, help="direct/gateway pairs per bulk row (3)")
    parser.add_argument(
        "--workers", type=int, help="compare server.workers = 1 with N (0: one per core)"
    )
    parser.add_argument("--kills", type=int, default=50, help="with --workers: kills timed")
    args = parser.parse_args()
    if args.workers is not None:
        from bench.workers import compare

        await compare(args)
        return
    exec_mb, pty_mb = (100, 50) if args.quick else (300, 200)
    sessions = min(args.sessions, 50) if args.quick else args.sessions
    args.pairs = args.pairs or (1 if args.quick else 3)
    work = Path(tempfile.mkdtemp(prefix="lockgate-bench-"))
    work.chmod(0o755)
    s = Setup(work, args.database_url)
    text = Path(f"/tmp/lockgate-bench-{pty_mb}.txt")
    if not text.exists():
        line = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod\n"
        text.write_bytes(line * (pty_mb * 1024 * 1024 // len(line)))
        text.chmod(0o644)
    s.start()
    rows = Rows()
    try:
        gcm = ("-c", "aes128-gcm@openssh.com")
        for label, extra in (("", ()), (", client leg aes128-gcm", gcm)):
            for name, mb, pty in (("exec bulk", exec_mb, False), ("pty bulk", pty_mb, True)):
                direct, via, ratios = [], [], []
                for _ in range(args.pairs):  # alternating, so drift hits both columns
                    direct.append(bulk(s, False, mb, pty, *extra))
                    via.append(bulk(s, True, mb, pty, *extra))
                    ratios.append(via[-1] / direct[-1])
                    await wait_indexed(s)
                spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
                rows.append(
                    (
                        f"{name} ({mb} MB{', recorded' if pty else ''}){label}, median",
                        f"{statistics.median(direct):.1f} MB/s",
                        f"{statistics.median(via):.1f} MB/s",
                        f"{statistics.median(ratios):.2f}{spread}",
                    )
                )
        for n, per in ((1, 200), (sessions, 20)):
            d_l = await keystrokes(s, False, n, per)
            g_l = await keystrokes(s, True, n, per)
            rows.append(
                (
                    f"keystroke echo, {n} session(s), p50",
                    f"{pct(d_l, 0.5):.2f} ms",
                    f"{pct(g_l, 0.5):.2f} ms",
                    f"{pct(g_l, 0.5) - pct(d_l, 0.5):+.2f} ms",
                )
            )
            rows.append(
                (
                    f"keystroke echo, {n} session(s), p99",
                    f"{pct(d_l, 0.99):.2f} ms",
                    f"{pct(g_l, 0.99):.2f} ms",
                    f"{pct(g_l, 0.99) - pct(d_l, 0.99):+.2f} ms",
                )
            )
        d_s = statistics.median(timed([*s.ssh(False), "true"]) for _ in range(10))
        g_s = statistics.median(timed([*s.ssh(True), "true"]) for _ in range(10))
        rows.append(
            (
                "session setup (ssh true), median",
                f"{d_s * 1000:.0f} ms",
                f"{g_s * 1000:.0f} ms",
                f"{(g_s - d_s) * 1000:+.0f} ms",
            )
        )
        idle = 200 if args.quick else 1000
        rss, teardown = await idle_rss(s, idle)
        rows.append(
            (
                f"gateway RSS per idle pty session ({idle})",
                "-",
                f"{rss:.0f} KB",
                f"{rss * 1000 / 1024:.0f} MB per 1000",
            )
        )
        rows.append(
            (f"{idle} idle sessions closed at once: all ended", "-", f"{teardown:.1f} s", "-")
        )
        kills = await kill_latency(s, 5 if args.quick else 10)
        rows.append(
            (
                "kill latency (request committed -> client closed)",
                "-",
                f"p50 {pct(kills, 0.5):.0f} ms, max {max(kills):.0f} ms",
                "-",
            )
        )
    except Exception:
        print((work / "serve.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        s.stop()
        shutil.rmtree(work, ignore_errors=True)
    rows.table()


if __name__ == "__main__":
    asyncio.run(main())
