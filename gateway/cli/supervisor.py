"""``lockgate serve`` with ``server.workers`` above 1: one supervisor, N worker processes.

The supervisor serves nothing itself. It holds the SSH and HTTP ports (``gateway.sockets``:
bound, not listening, so a port 0 is chosen once) and starts each worker as
``lockgate serve --worker I`` with its own listening sockets on them (``SO_REUSEPORT``: the
kernel spreads connections over the workers). Each worker is a full node named
``<node>-w<I>`` (own registry, own cluster follower, same database) and says ``ready`` on its
standard output once it serves.

- Start-up: worker 0 first (it migrates nothing, but it is the one that reports a node that
  cannot serve — no database, no vault key — with its one ``lockgate:`` line, and the
  supervisor exits with its status); then the others, together.
- A worker that dies is started again, as the same node name, told that its sessions were
  cut by a crash: it ends them as ``worker lost`` and seals their recordings (a worker that
  keeps dying at once is restarted with a growing delay, up to ``MAX_BACKOFF``).
- SIGTERM or SIGINT goes to every worker; each ends its sessions with the termination line
  and seals their recordings; the supervisor exits 0 once all have exited 0.
- Workers die with the supervisor (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the node
  leaves no worker behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

from gateway import sockets
from gateway.cluster.liveness import worker_name
from gateway.config import Config, Listen
from gateway.errors import StartupError

MAX_BACKOFF = 30.0  # seconds between restarts of a worker that keeps dying
QUICK_DEATH = 10.0  # seconds: a worker dying sooner after its start doubles the delay
STOP_GRACE = 60.0  # seconds for workers to end their sessions before SIGKILL


@dataclass
class Worker:
    index: int
    name: str
    proc: asyncio.subprocess.Process | None = None
    started: float = 0.0
    backoff: float = 0.0
    restarts: int = 0


@dataclass
class Supervisor:
    config: Config
    config_path: Path | None
    out: TextIO
    workers: list[Worker] = field(default_factory=list)
    stopping: bool = False
    ssh_port: int = 0
    http_port: int = 0
    _holds: list[socket.socket] = field(default_factory=list)

    def hold_ports(self) -> None:
        server = self.config.server
        try:
            ssh = sockets.bind(server.ssh_listen, shared=True, listening=False)
        except OSError as exc:
            raise StartupError(
                f"cannot listen for SSH on {server.ssh_listen} ({exc.strerror})"
            ) from None
        self._holds.append(ssh)
        try:
            http = sockets.bind(server.http_listen, shared=True, listening=False)
        except OSError as exc:
            raise StartupError(
                f"cannot listen for HTTP on {server.http_listen} ({exc.strerror})"
            ) from None
        self._holds.append(http)
        self.ssh_port, self.http_port = sockets.port_of(ssh), sockets.port_of(http)

    async def spawn(self, worker: Worker, *, after_crash: bool) -> bool:
        """Start ``worker`` and wait for its ``ready``; False when it exited first."""
        server = self.config.server
        ssh = sockets.bind(_at(server.ssh_listen, self.ssh_port), shared=True)
        http = sockets.bind(_at(server.http_listen, self.http_port), shared=True)
        argv = [sys.executable, "-m", "gateway", "serve", "--worker", str(worker.index)]
        argv += ["--listen-fds", f"{ssh.fileno()},{http.fileno()}"]
        if after_crash:
            argv.append("--after-crash")
        if self.config_path is not None:
            argv += ["--config", str(self.config_path)]
        try:
            worker.proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, pass_fds=(ssh.fileno(), http.fileno())
            )
        finally:
            ssh.close()  # the worker has its own copies: a dead worker's socket goes with it
            http.close()
        worker.started = time.monotonic()
        assert worker.proc.stdout is not None
        line = await worker.proc.stdout.readline()
        return line.strip() == b"ready"

    async def start(self) -> int:
        self.hold_ports()
        parent = self.config.server.node_name
        self.workers = [
            Worker(i, worker_name(parent, i)) for i in range(self.config.server.workers)
        ]
        if not await self.spawn(self.workers[0], after_crash=False):
            return await self._failed_start()
        ready = await asyncio.gather(*(self.spawn(w, after_crash=False) for w in self.workers[1:]))
        if not all(ready):
            return await self._failed_start()
        return 0

    async def _failed_start(self) -> int:
        for worker in self.workers:
            if worker.proc is None:
                continue
            _signal(worker.proc, signal.SIGTERM)
            await worker.proc.wait()
        return 1  # as one process does

    def describe(self) -> str:
        cfg = self.config.server
        names = ", ".join(w.name for w in self.workers)
        host = cfg.ssh_listen.host
        host = socket.gethostname() if host in ("0.0.0.0", "::", "") else host  # noqa: S104
        return (
            f"Lockgate node {cfg.node_name} is serving with {len(self.workers)} workers "
            f"({names}).\n"
            f"  SSH:  {cfg.ssh_listen.host}:{self.ssh_port}   "
            f"connect: ssh -p {self.ssh_port} USER+ACCOUNT@TARGET@{host}\n"
            f"        gateway shell: ssh -p {self.ssh_port} USER@{host} help\n"
            f"  Web:  http://{cfg.http_listen.host}:{self.http_port}/  "
            f"(API: /api/v1/openapi.json; /healthz, /readyz, /metrics)\n"
        )

    async def watch(self, worker: Worker) -> None:
        """Restart ``worker`` whenever it dies, until the node stops."""
        while not self.stopping:
            assert worker.proc is not None
            code = await worker.proc.wait()
            if self.stopping:
                return
            lived = time.monotonic() - worker.started
            worker.backoff = (
                min(MAX_BACKOFF, max(1.0, worker.backoff * 2)) if lived < QUICK_DEATH else 0.0
            )
            how = f"signal {-code}" if code < 0 else f"status {code}"
            sys.stderr.write(f"lockgate: worker {worker.name} exited ({how}); restarting\n")
            sys.stderr.flush()
            if worker.backoff:
                await asyncio.sleep(worker.backoff)
            if self.stopping:
                return
            worker.restarts += 1
            await self.spawn(worker, after_crash=True)

    async def stop(self) -> int:
        self.stopping = True
        live = [w.proc for w in self.workers if w.proc is not None and w.proc.returncode is None]
        for proc in live:
            _signal(proc, signal.SIGTERM)
        codes = []
        for proc in live:
            try:
                async with asyncio.timeout(STOP_GRACE):
                    codes.append(await proc.wait())
            except TimeoutError:
                _signal(proc, signal.SIGKILL)
                codes.append(await proc.wait())
        for hold in self._holds:
            hold.close()
        return 0 if all(c == 0 for c in codes) else 1


def _signal(proc: asyncio.subprocess.Process, sig: int) -> None:
    """``sig`` to a worker not yet reaped. Not ``Process.send_signal``: it polls first, and
    that poll can reap a worker that has just exited before asyncio's child watcher does —
    the watcher then logs "Unknown child process" and reports 255. A pid is not reused
    before it is reaped, so signalling an exited one reaches nobody else."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)


def _at(listen: Listen, port: int) -> Listen:
    return replace(listen, port=port)


async def supervise(config: Config, config_path: Path | None, out: TextIO) -> int:
    """Run the node's workers until SIGTERM/SIGINT (see the module doc)."""
    supervisor = Supervisor(config, config_path, out)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    code = await supervisor.start()
    if code:
        return code
    out.write(supervisor.describe())
    out.flush()
    watchers = [asyncio.ensure_future(supervisor.watch(w)) for w in supervisor.workers]
    try:
        await stop.wait()
    finally:
        out.write("lockgate: shutting down; ending live sessions\n")
        out.flush()
        code = await supervisor.stop()
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
    return code
