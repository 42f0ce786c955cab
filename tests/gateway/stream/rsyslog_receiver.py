"""Debian's real rsyslogd as a SIEM receiver: RFC 5424 over TCP (imtcp) on a free loopback
port, every message written to a file by omfile with the fields rsyslog itself parsed.
Started in the foreground with a configuration of its own; stop() and start() again on the
same port and file simulate an outage."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.target import free_port

RSYSLOGD = "/usr/sbin/rsyslogd"
# What rsyslog parsed: protocol version, host, app, msgid, structured data, message.
TEMPLATE = "%protocol-version%|%hostname%|%app-name%|%msgid%|%structured-data%|%msg%\\n"
_SD = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Received:
    version: str
    hostname: str
    app: str
    msgid: str
    params: dict[str, str]
    msg: str


@dataclass
class Rsyslog:
    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def output(self) -> Path:
        return self.workdir / "received.log"

    def _config(self) -> Path:
        spool = self.workdir / "spool"
        spool.mkdir(exist_ok=True)
        conf = self.workdir / "rsyslog.conf"
        conf.write_text(
            f'global(workDirectory="{spool}")\n'
            'module(load="imtcp")\n'
            f'template(name="lg" type="string" string="{TEMPLATE}")\n'
            'ruleset(name="lg") {\n'
            f'  action(type="omfile" file="{self.output}" template="lg")\n'
            "}\n"
            f'input(type="imtcp" address="127.0.0.1" port="{self.port}" ruleset="lg")\n'
        )
        return conf

    def start(self) -> None:
        conf = self._config()
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(conf), "-i", str(self.workdir / "rsyslogd.pid")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"rsyslogd exited: {err}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("rsyslogd did not listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self.proc = None

    def received(self) -> list[Received]:
        if not self.output.exists():
            return []
        found = []
        for line in self.output.read_text(encoding="utf-8").splitlines():
            version, host, app, msgid, sd, msg = line.split("|", 5)
            found.append(
                Received(
                    version,
                    host,
                    app,
                    msgid,
                    {k: re.sub(r"\\(.)", r"\1", v) for k, v in _SD.findall(sd)},
                    msg.removeprefix("\ufeff"),
                )
            )
        return found

    def seqs(self) -> list[int]:
        return [int(r.params["seq"]) for r in self.received()]
