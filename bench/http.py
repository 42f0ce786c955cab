"""Web targets: direct to the app, through nginx, through Lockgate. Not a test: prints a table.

    python -m bench.http [--quick] [--duration 10] [--download-mb 1024] [--workers 1]

Needs Debian's ``nginx`` (the upstream and the reference proxy), ``wrk`` (the load generator:
``apt-get install wrk``; a C client, so the client is never what is measured) and ``curl``
(the download). Everything listens on 127.0.0.1 and stops by itself; each wrk run lasts
``--duration`` seconds (3 with ``--quick``), each download at most 120 s.

- The upstream app is nginx serving static files (a 1 KB body; a sparse file for the
  download, sent with sendfile): a C server with one worker that answers in microseconds, so
  the upstream is never the bottleneck and costs the same in every column. What a column adds
  over "direct" is the proxy alone.
- The reference proxy is a second nginx with ``--workers`` worker processes, as many as the
  gateway's (``server.workers``; 1 by default: one Python process): ``proxy_pass`` to a
  keep-alive upstream pool, HTTP/1.1 upstream, buffering off, with 64 KB buffers
  (unbuffered, nginx relays one ``proxy_buffer_size`` at a time; the default of one page
  makes it less than half as fast on the download).
- The Lockgate leg runs ``lockgate init`` and ``lockgate serve`` in a temporary directory as
  the README says, adds the app as a web target with an injected bearer header and a rule for
  channel ``http``, signs a person in (password + TOTP) and opens the target through the
  hand-off like the "Open" link; then the same wrk and curl runs go through it. wrk is one
  address: ``limits.http_max_unauthenticated`` is raised from 64 to 256 for it.
- Small GETs: requests/s and latency p50/p99 (wrk's, per request, closed loop over keep-alive
  connections) at 1 and 64 concurrent connections; "added" is the difference to direct. And
  the proxy's CPU time (user + system, from ``/proc``, over its processes) per request of
  the run: what the proxy costs, however busy the shared cores were.
- Download: MB/s of one ``curl`` (median of 3, 1 with ``--quick``) and the proxy's peak RSS
  (VmRSS summed over the proxy's processes: nginx's master and workers, or ``lockgate
  serve`` and its workers; sampled every 10 ms) during it.

The machine's cores are shared with the load generator and the upstream: compare columns of
one run, not runs of different machines.
"""

from __future__ import annotations

import argparse
import contextlib
import http.cookiejar
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from base64 import b32decode
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

PY = sys.executable
NGINX = "/usr/sbin/nginx"
NA = "not available"
MEASURES = (("requests/s", "rps"), ("latency p50", "p50"), ("latency p99", "p99"))
SMALL = "small.bin"
BIG = "big.bin"


class NotAvailable(Exception):
    """A leg cannot run here; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on port {port}")


def _tree(pid: int) -> Iterator[int]:
    """``pid`` and its children, theirs and so on (a supervisor and its workers)."""
    yield pid
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            yield from _tree(int(child))


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` and its children."""
    total = 0
    for each in _tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` and its children so far."""
    total = 0.0
    for each in _tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@contextlib.contextmanager
def peak_rss(pid: int) -> Iterator[list[int]]:
    """[before, peak] KB of ``pid`` while the block runs."""
    result = [rss_kb(pid), 0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            result[1] = max(result[1], rss_kb(pid))
            done.wait(0.01)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        done.set()
        thread.join()


# --- the legs ------------------------------------------------------------------------


@dataclass
class Leg:
    """Where a client sends its requests, and which process is the proxy."""

    name: str
    base: str  # URL prefix of the app's files, ending in /
    headers: list[str] = field(default_factory=list)  # "Name: value"
    pid: int | None = None  # the proxy process whose RSS (with its children's) is sampled


def nginx_conf(work: Path, name: str, body: str, workers: int = 1) -> Path:
    temp = work / f"{name}-temp"
    temp.mkdir()
    paths = "".join(
        f"{kind}_temp_path {temp / kind};\n" for kind in ("client_body", "proxy", "fastcgi")
    ) + "".join(f"{kind}_temp_path {temp / kind};\n" for kind in ("uwsgi", "scgi"))
    conf = work / f"{name}.conf"
    conf.write_text(
        f"daemon off;\nmaster_process on;\nworker_processes {workers};\npid {work / name}.pid;\n"
        f"error_log {work / name}-error.log warn;\nevents {{ worker_connections 4096; }}\n"
        "http {\n  access_log off;\n  default_type application/octet-stream;\n"
        "  keepalive_requests 10000000;\n  keepalive_timeout 120s;\n"
        f"{paths}{body}}}\n"
    )
    return conf


def start_nginx(work: Path, name: str, conf: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [NGINX, "-p", str(work), "-c", str(conf), "-e", str(work / f"{name}-error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_listening(port, proc, f"nginx ({name})")
    return proc


def start_upstream(work: Path, download_mb: int) -> tuple[subprocess.Popen[bytes], str]:
    www = work / "www"
    www.mkdir()
    (www / SMALL).write_bytes(b"x" * 1023 + b"\n")
    (www / "index.html").write_text("<!doctype html><title>bench app</title>\n")
    with (www / BIG).open("wb") as f:
        f.truncate(download_mb * 1024 * 1024)  # sparse: the disk is not what is measured
    for path in (work, www, *www.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)  # nginx's worker is not root
    port = free_port()
    conf = nginx_conf(
        work,
        "upstream",
        f"  sendfile on;\n  tcp_nopush on;\n  server {{\n    listen 127.0.0.1:{port};\n"
        f"    root {www};\n  }}\n",
    )
    return start_nginx(work, "upstream", conf, port), f"http://127.0.0.1:{port}/"


def start_reference(work: Path, upstream: str, workers: int) -> tuple[subprocess.Popen[bytes], Leg]:
    port = free_port()
    host = urllib.parse.urlsplit(upstream).netloc
    conf = nginx_conf(
        work,
        "proxy",
        f"  upstream app {{\n    server {host};\n    keepalive 64;\n  }}\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n"
        "      proxy_pass http://app;\n      proxy_http_version 1.1;\n"
        '      proxy_set_header Connection "";\n      proxy_set_header Host $host;\n'
        "      proxy_buffering off;\n      proxy_buffer_size 64k;\n"
        "      proxy_buffers 8 64k;\n    }\n  }\n",
        workers,
    )
    proc = start_nginx(work, "proxy", conf, port)
    return proc, Leg("nginx", f"http://127.0.0.1:{port}/", pid=proc.pid)


def proxy_missing() -> str | None:
    """Why the Lockgate leg cannot start on this branch (None: it may)."""
    from policy.models import CHANNEL_KINDS

    if "http" not in CHANNEL_KINDS:
        return "policy has no channel kind 'http' on this branch"
    return None  # whether the gateway proxies web targets shows at the hand-off


class Lockgate:
    """``lockgate serve`` in its own process, set up through the CLI like the README."""

    def __init__(self, work: Path, upstream: str, workers: int) -> None:
        self.dir = work / "lockgate"
        self.dir.mkdir()
        self.config = self.dir / "lockgate.toml"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
        self.env["LOCKGATE_SERVER_WORKERS"] = str(workers)
        self.upstream = upstream
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [PY, "-m", "gateway", *argv, "--config", str(self.config)],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"lockgate {' '.join(argv[:2])} failed: {result.stderr.strip()}")
        return result

    def start(self) -> Leg:
        self.cli("init", "--data-dir", "data")
        ssh_port, http_port = free_port(), free_port()
        text = self.config.read_text()
        text = text.replace('"0.0.0.0:2222"', f'"127.0.0.1:{ssh_port}"')
        text = text.replace('"127.0.0.1:8080"', f'"127.0.0.1:{http_port}"')
        # One address opens every wrk connection at once: past the default cap of 64 fresh
        # connections per address, one that comes while the last run's are closing is refused.
        self.config.write_text(
            text + "\n[limits]\nhttp_max_unauthenticated = 256\n"
            '\n[[rules]]\nname = "bench"\nroles = ["bench"]\napprovals = 0\n'
            'require_reason = false\nmax_duration = "1d"\ndefault_duration = "1d"\n'
            'channels = ["http"]\n'
        )
        password = "bench-" + secrets.token_urlsafe(12)
        added = self.cli(
            "user", "add", "alice", "--role", "bench", "--password-stdin", "--totp",
            stdin=password + "\n",
        )  # fmt: skip
        uri = re.search(r"otpauth://\S+", added.stderr)
        assert uri is not None, "no TOTP enrolment URI"
        self.cli("target", "add", "app", "--url", self.upstream, "--account", "bench")
        self.cli(
            "credential", "set", "app", "bench", "--header", "Authorization", "--value-stdin",
            stdin="Bearer bench-upstream-token\n",
        )  # fmt: skip
        self.cli(
            "request", "app", "--account", "bench", "--for", "1d", "--reason", "bench",
            "--as", "alice",
        )  # fmt: skip
        self.log = (self.dir / "serve.log").open("wb")
        self.proc = subprocess.Popen(
            [PY, "-m", "gateway", "serve", "--config", str(self.config)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        wait_listening(http_port, self.proc, "lockgate serve")
        gateway = f"http://127.0.0.1:{http_port}"
        base, cookie = self.open_target(gateway, "alice", password, uri.group(0))
        return Leg("Lockgate", base, [f"Cookie: {cookie}"], pid=self.proc.pid)

    def open_target(self, gateway: str, user: str, password: str, uri: str) -> tuple[str, str]:
        """Sign in on the gateway, then follow the target's "Open" link through the hand-off:
        (the app's base URL through the gateway, the Cookie header for it)."""
        from vault.totp import code_at

        secret = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)["secret"][0]
        code = code_at(b32decode(secret + "=" * (-len(secret) % 8)), datetime.now(UTC))
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        form = urllib.parse.urlencode({"user": user, "password": password, "code": code})
        sign_in = urllib.request.Request(
            f"{gateway}/login", data=form.encode(), headers={"Origin": gateway}
        )
        opener.open(sign_in, timeout=30).close()
        if not any(c.name == "lockgate_session" for c in jar):
            raise SystemExit("the bench user could not sign in on the gateway")
        # The "Open" link; without wildcard DNS on loopback it lands in path-prefix mode.
        entry = f"{gateway}/open/app"
        try:
            with opener.open(entry, timeout=30) as response:
                base = response.geturl()
        except urllib.error.HTTPError as exc:
            raise NotAvailable(f"the hand-off at {entry} answered {exc.code}") from None
        host = urllib.parse.urlsplit(base).hostname
        cookies = "; ".join(f"{c.name}={c.value}" for c in jar if c.domain.lstrip(".") == host)
        return base if base.endswith("/") else base + "/", cookies

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(60)


# --- measuring -----------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


@dataclass(frozen=True)
class Load:
    rps: float
    p50: float  # ms
    p99: float
    errors: int
    cpu_us: float | None = None  # the proxy's CPU time per request (user + system)


def wrk(leg: Leg, clients: int, seconds: float) -> Load:
    argv = ["wrk", "--latency", "-t", str(min(2, clients)), "-c", str(clients)]
    cpu_before = cpu_seconds(leg.pid) if leg.pid else 0.0
    for header in leg.headers:
        argv += ["-H", header]
    out = subprocess.run(
        [*argv, "-d", f"{seconds:g}s", leg.base + SMALL],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)$", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)$", out, re.M).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    cpu = (cpu_seconds(leg.pid) - cpu_before) * 1e6 / requests if leg.pid and requests else None
    return Load(rps, p50, p99, errors, cpu)


def download(leg: Leg, expected: int) -> float:
    """MB/s of one download of the big file with curl."""
    argv = ["curl", "-s", "-o", "/dev/null", "--max-time", "120"]
    for header in leg.headers:
        argv += ["-H", header]
    out = subprocess.run(
        [*argv, "-w", "%{http_code} %{size_download} %{speed_download}", leg.base + BIG],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    ).stdout.split()
    if len(out) != 3 or out[0] != "200" or int(float(out[1])) != expected:
        raise SystemExit(f"download via {leg.name} failed: {' '.join(out)}")
    return float(out[2]) / 1e6


# --- the table -----------------------------------------------------------------------


class Table:
    HEAD = ("measure", "direct", "via nginx", "via Lockgate")

    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []

    def add(self, *row: str) -> None:
        print("  ..", " | ".join(row), flush=True)
        self.rows.append(row)

    def print(self) -> None:
        widths = [max(len(r[i]) for r in [self.HEAD, *self.rows]) for i in range(4)]

        def line(row: tuple[str, ...]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

        print(line(self.HEAD))
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for row in self.rows:
            print(line(row))


def cell(load: Load | None, direct: Load, measure: str) -> str:
    """One figure of a leg, with what it adds to (latency) or keeps of (rate) direct's."""
    if load is None:
        return NA
    value, base = getattr(load, measure), getattr(direct, measure)
    errors = f", {load.errors} errors" if load.errors else ""
    if measure == "rps":
        text = f"{value:.0f} req/s" + ("" if load is direct else f" ({value / base:.0%})")
    else:
        text = f"{value:.3f} ms" + ("" if load is direct else f" ({value - base:+.3f})")
    return text + errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 s runs, 256 MB, one download")
    parser.add_argument("--duration", type=float, help="seconds per wrk run (10)")
    parser.add_argument("--download-mb", type=int, help="size of the download (1024)")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes of the gateway and of nginx (1)"
    )
    args = parser.parse_args()
    seconds = args.duration or (3.0 if args.quick else 10.0)
    download_mb = args.download_mb or (256 if args.quick else 1024)
    downloads = 1 if args.quick else 3
    for tool in ("wrk", "curl", NGINX):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed: apt-get install wrk curl nginx")
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="lockgate-httpbench-"))
    procs: list[subprocess.Popen[bytes]] = []
    lockgate: Lockgate | None = None
    table = Table()
    try:
        upstream_proc, upstream = start_upstream(work, download_mb)
        procs.append(upstream_proc)
        nginx_proc, nginx = start_reference(work, upstream, args.workers)
        procs.append(nginx_proc)
        legs: list[Leg | None] = [Leg("direct", upstream), nginx, None]
        missing = proxy_missing()
        if missing is None:
            lockgate = Lockgate(work, upstream, args.workers)
            try:
                legs[2] = lockgate.start()
            except (NotAvailable, OSError) as exc:
                missing = str(exc)
        for clients in (1, 64):
            loads: list[Load | None] = []
            for leg in legs:
                if leg is not None:
                    wrk(leg, clients, 1.0)  # warm-up: connections and pools
                loads.append(None if leg is None else wrk(leg, clients, seconds))
            direct = loads[0]
            assert direct is not None
            who = f"{clients} client{'s' if clients > 1 else ''}"
            for label, measure in MEASURES:
                table.add(f"1 KB GET, {who}, {label}", *(cell(x, direct, measure) for x in loads))
            table.add(
                f"1 KB GET, {who}, proxy CPU per request",
                *("-" if x is None or x.cpu_us is None else f"{x.cpu_us:.0f} us" for x in loads),
            )
        # Twice through the file first: its (sparse) pages are then in the page cache, and the
        # upstream costs the same for every run that follows.
        for _ in range(2):
            download(Leg("direct", upstream), download_mb * 1024 * 1024)
        runs: dict[str, list[float]] = {leg.name: [] for leg in legs if leg is not None}
        rss: dict[str, tuple[int, int]] = {}  # KB before the first run, peak over all runs
        for _ in range(downloads):  # alternating, so drift hits every column alike
            for leg in legs:
                if leg is not None:
                    with peak_rss(leg.pid or os.getpid()) as sampled:
                        runs[leg.name].append(download(leg, download_mb * 1024 * 1024))
                    before, peak = rss.get(leg.name, (sampled[0], 0))
                    rss[leg.name] = (before, max(peak, sampled[1]))
        speeds: list[str] = []
        memory: list[str] = []
        direct_speed = statistics.median(runs["direct"])
        for leg in legs:
            if leg is None:
                speeds.append(NA)
                memory.append(NA)
                continue
            speed = statistics.median(runs[leg.name])
            ratio = "" if leg.name == "direct" else f" ({speed / direct_speed:.0%})"
            speeds.append(f"{speed:.0f} MB/s{ratio}")
            before, peak = rss[leg.name]
            memory.append(
                "-" if leg.pid is None else f"{peak / 1024:.1f} MB (before {before / 1024:.1f} MB)"
            )
        table.add(f"{download_mb} MB download, median of {downloads}", *speeds)
        table.add("proxy peak RSS during the download", *memory)
    finally:
        if lockgate is not None:
            lockgate.stop()
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    print()
    table.print()
    print(
        f"\n{os.cpu_count()} cores, {args.workers} worker process(es) in nginx and in Lockgate; "
        f"load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (other work on the machine shows in the p99s)."
    )
    if missing:
        print(f"\nLockgate: {NA}: {missing}.")


if __name__ == "__main__":
    main()
