"""Two ``lockgate serve`` nodes of two workers each, on one PostgreSQL database, behind
Debian's HAProxy running ``deploy/haproxy/haproxy.cfg`` (its addresses replaced by free
loopback ports; PROXY protocol v2 to the nodes). Real OpenSSH clients connect through it
from an address of their own (127.0.0.5), so the audit must show that address, not
HAProxy's.

Proven here: sessions spread over all four workers; a kill issued on one node ends a session
held by the other; ``kill -9`` of one worker cuts its clients, its supervisor restarts it and
the database shows those sessions ended as ``worker lost``; a browser signed in through
HAProxy's HTTPS frontend is signed in on both nodes; ``kill -9`` of a whole node cuts
its clients and the surviving node ends its sessions as ``node lost`` (after
``server.node_lost_after``, 3 s here) with their recordings sealed. The tests share one
cluster and run in file order.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from gateway.cli.setup import generate_host_key, migrate
from gateway.config import Config, load_config
from gateway.services import open_services
from gateway.web.auth import COOKIE
from policy.service import SYSTEM_ACTOR
from tests.eventually import eventually_blocking
from tests.target import TARGET_USER, Sshd, free_port, register_target
from vault import totp
from vault.keys import generate_master_key_file

PY = sys.executable
ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
PG_URL = os.environ.get("LOCKGATE_TEST_DATABASE_URL", "")
CLIENT_ADDRESS = "127.0.0.5"  # the people's machine, as HAProxy sees it
PASSWORD = "carol-correct-horse-battery"
SESSIONS = 24  # 12 per node: all on one worker of a node by chance is 1 in 2,048

NODE_CONFIG = """
[server]
ssh_listen = "127.0.0.1:{ssh}"
http_listen = "127.0.0.1:{http}"
data_dir = "{data}"
node_name = "{name}"
workers = 2
heartbeat_interval = 1
node_lost_after = 3
proxy_protocol = true
trusted_proxies = ["127.0.0.1/32"]
[database]
url = "{db}"
[vault]
master_key = "file:{shared}/master.key"
[recordings]
path = "{shared}/recordings"
[[rules]]
name = "dev"
roles = ["dev"]
approvals = 0
require_reason = false
"""


def _haproxy() -> str:
    found = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    assert found, "Debian's haproxy is needed: apt-get install -y haproxy"
    return found


def _certificate(directory: Path) -> Path:
    key, cert, pem = directory / "lb.key", directory / "lb.crt", directory / "lb.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    return pem


def render(
    config: str, *, pem: Path, binds: dict[str, str], nodes: dict[str, tuple[int, int]]
) -> str:
    """The deploy file with this test's addresses: the same sections, options and checks."""
    out = config.replace("/etc/haproxy/certs/lockgate.pem", str(pem))
    out = out.replace("bind :2222", f"bind {binds['ssh']}")
    out = out.replace("bind :443 ", f"bind {binds['web']} ")
    for name, (ssh, http) in nodes.items():
        out = out.replace(f"{name}.internal:2222", f"127.0.0.1:{ssh}")
        out = out.replace(f"{name}.internal:8080", f"127.0.0.1:{http}")
        out = re.sub(
            rf"(server {name} 127\.0\.0\.1:{ssh} send-proxy-v2 check port )8080",
            rf"\g<1>{http}",
            out,
        )
    settings = [line for line in out.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in settings if ".internal" in line or "8080" in line]
    return out


def test_the_deploy_haproxy_config_is_valid(tmp_path: Path) -> None:
    """``haproxy -c`` on the file as shipped (only the certificate path points at one)."""
    text = HAPROXY_CFG.read_text().replace(
        "/etc/haproxy/certs/lockgate.pem", str(_certificate(tmp_path))
    )
    checked = tmp_path / "haproxy.cfg"
    checked.write_text(text)
    done = subprocess.run([_haproxy(), "-c", "-f", str(checked)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@dataclass
class Cluster:
    env: dict[str, str]
    configs: dict[str, Path]
    http: dict[str, int]
    serve: dict[str, subprocess.Popen[str]]
    lb_ssh: int
    lb_web: int
    key: Path
    token: str
    seed: bytes  # carol's TOTP seed
    clients: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def api(self, node: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http[node]}/api/v1{path}",
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method="POST" if body is not None else "GET",
        )
        for attempt in range(5):
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return json.loads(response.read())
            except (ConnectionError, urllib.error.URLError) as exc:
                # A connection taken by a worker just killed, before the kernel stopped
                # giving it any: the next one goes to a live worker.
                if attempt == 4 or isinstance(exc, urllib.error.HTTPError):
                    raise
        raise AssertionError("unreachable")

    def ssh(self, command: str) -> subprocess.Popen[bytes]:
        """A person's session through HAProxy, from their own address."""
        client = subprocess.Popen(
            ["ssh", "-p", str(self.lb_ssh), "-i", str(self.key), "-F", "/dev/null",
             "-o", f"BindAddress={CLIENT_ADDRESS}", "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes",
             f"alice+{TARGET_USER}@db01@127.0.0.1", command],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.clients.append(client)
        return client

    def live(self) -> list[dict[str, Any]]:
        return list(self.api("gw1", "/sessions?active=1&limit=500")["items"])

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["name"]: n for n in self.api("gw1", "/nodes")["items"]}

    def open_sessions(self, count: int) -> list[str]:
        """``count`` sessions whose shells said they are up; their ids."""
        before = {s["id"] for s in self.live()}
        clients = [self.ssh("echo up; exec sleep 600") for _ in range(count)]
        for client in clients:
            assert client.stdout is not None
            line = client.stdout.readline()
            assert line == b"up\n", client.stderr.read() if client.stderr else line

        def fresh() -> list[str] | None:
            new = [s["id"] for s in self.live() if s["id"] not in before]
            return new if len(new) == count else None

        return eventually_blocking(fresh, what=f"{count} new sessions in the database")

    def cut(self) -> int:
        """Clients whose session was cut (ssh exited non-zero)."""
        return len([c for c in self.clients if c.poll() is not None and c.returncode != 0])


def _database(url: str, action: str, name: str) -> None:
    async def run() -> None:
        admin = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            async with admin.connect() as conn:
                if action == "create":
                    await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
                else:
                    await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            await admin.dispose()

    asyncio.run(run())


async def _provision(config: Config, key: Path, sshd: Sshd) -> tuple[str, bytes]:
    """Schema, alice (dev, with her key), carol (dev, password and TOTP), boss (admin) and
    his API token, the target; (the token, carol's TOTP seed)."""
    await migrate(config)
    services = await open_services(config)
    try:
        policy = services.policy
        pub = (key.parent / f"{key.name}.pub").read_text()
        await policy.add_user(SYSTEM_ACTOR, "alice", roles=["dev"], public_keys=[pub])
        await policy.add_user(SYSTEM_ACTOR, "carol", roles=["dev"], password=PASSWORD)
        uri = await services.vault.enroll_totp(SYSTEM_ACTOR, "carol")
        await policy.set_totp_enabled(SYSTEM_ACTOR, "carol", True)
        secret = parse_qs(urlsplit(uri).query)["secret"][0]
        await policy.add_user(SYSTEM_ACTOR, "boss", roles=["admin"])
        await register_target(services, sshd)
        token, _ = await policy.create_token(SYSTEM_ACTOR, "boss")
        return str(token), base64.b32decode(secret + "=" * (-len(secret) % 8))
    finally:
        await services.aclose()


def _start_serve(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [PY, "-m", "gateway", "serve", "--config", str(config)],
        env=env, stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    banner = proc.stdout.readline()
    assert banner.startswith("Lockgate node"), banner + log.read_text()
    return proc


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, sshd: Sshd) -> Iterator[Cluster]:
    if not PG_URL:
        pytest.skip("two nodes share one PostgreSQL database: set LOCKGATE_TEST_DATABASE_URL")
    haproxy = _haproxy()
    work = tmp_path_factory.mktemp("haproxy-cluster")
    name = f"lg_{uuid.uuid4().hex[:12]}"
    _database(PG_URL, "create", name)
    db = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    env["PYTHONPATH"] = str(ROOT)
    procs: list[subprocess.Popen[Any]] = []
    try:
        (work / "recordings").mkdir()
        generate_master_key_file(work / "master.key")
        ports = {n: (free_port(), free_port()) for n in ("gw1", "gw2")}
        configs = {}
        for node, (ssh, http) in ports.items():
            data = work / node
            data.mkdir(mode=0o700)
            configs[node] = work / f"{node}.toml"
            configs[node].write_text(NODE_CONFIG.format(
                ssh=ssh, http=http, data=data, name=node, db=db, shared=work
            ))  # fmt: skip
        generate_host_key(work / "gw1" / "ssh_host_ed25519_key")
        for suffix in ("", ".pub"):  # one host key for the whole gateway, as behind any LB
            shutil.copy(work / "gw1" / f"ssh_host_ed25519_key{suffix}", work / "gw2")
        key = work / "id_alice"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        token, seed = asyncio.run(_provision(load_config(configs["gw1"]), key, sshd))
        web = {n: p[1] for n, p in ports.items()}
        cluster = Cluster(env, configs, web, {}, free_port(), free_port(), key, token, seed)
        for node in ports:
            cluster.serve[node] = _start_serve(configs[node], env, work / f"{node}.log")
            procs.append(cluster.serve[node])
        lb = work / "haproxy.cfg"
        stats = work / "haproxy.sock"
        lb.write_text(render(
            HAPROXY_CFG.read_text().replace("global\n", f"global\n    stats socket {stats}\n", 1),
            pem=_certificate(work),
            binds={"ssh": f"127.0.0.1:{cluster.lb_ssh}", "web": f"127.0.0.1:{cluster.lb_web}"},
            nodes=ports,
        ))  # fmt: skip
        balancer = subprocess.Popen(
            [haproxy, "-db", "-f", str(lb)],
            stdout=(work / "haproxy.log").open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(balancer)

        def both_ready() -> bool:
            nodes = cluster.nodes()
            return len([n for n in nodes.values() if n["state"] == "live"]) == 4

        eventually_blocking(both_ready, what="four workers beating")

        def balancing() -> bool:
            assert balancer.poll() is None, (work / "haproxy.log").read_text()
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", cluster.lb_ssh)),
            ):
                return True
            return False

        eventually_blocking(balancing, what="HAProxy listening")
        yield cluster
    finally:
        for proc in reversed(procs):  # the balancer first, as an operator drains a node
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _database(PG_URL, "drop", name)


def _ends(cluster: Cluster, ids: list[str]) -> dict[str, str]:
    def ended() -> dict[str, str] | None:
        rows = {i: cluster.api("gw1", f"/sessions/{i}") for i in ids}
        if any(r["ended_at"] is None for r in rows.values()):
            return None
        return {i: str(r["end_reason"]) for i, r in rows.items()}

    return eventually_blocking(ended, what=f"{len(ids)} sessions marked ended")


def test_sessions_through_haproxy_spread_over_every_worker_with_the_real_address(
    cluster: Cluster,
) -> None:
    opened = cluster.open_sessions(SESSIONS)
    rows = {s["id"]: s for s in cluster.live() if s["id"] in opened}
    assert {r["node"] for r in rows.values()} == {"gw1-w0", "gw1-w1", "gw2-w0", "gw2-w1"}
    assert {r["client_addr"] for r in rows.values()} == {CLIENT_ADDRESS}
    events = cluster.api("gw1", "/audit?since=1h&limit=500")["items"]
    starts = [e for e in events if e["action"] == "session.start" and e["subject"] in opened]
    assert len(starts) == SESSIONS
    assert {e["details"]["client"] for e in starts} == {CLIENT_ADDRESS}


def test_a_kill_issued_on_one_node_ends_a_session_on_the_other(cluster: Cluster) -> None:
    before = {s["id"] for s in cluster.live()}
    client = cluster.ssh("echo up; exec sleep 600")
    assert client.stdout is not None and client.stdout.readline() == b"up\n"
    [mine] = eventually_blocking(
        lambda: [s for s in cluster.live() if s["id"] not in before] or None,
        what="the new session in the database",
    )
    holder = mine["node"].split("-")[0]
    issuer = "gw2" if holder == "gw1" else "gw1"
    cluster.api(issuer, f"/sessions/{mine['id']}/terminate", {"reason": f"from {issuer}"})
    _, err = client.communicate(timeout=60)
    assert b"[lockgate] session terminated: terminated by boss: from " + issuer.encode() in err
    assert client.returncode != 0
    eventually_blocking(  # only that one ended
        lambda: {s["id"] for s in cluster.live()} == before, what="the end recorded"
    )


def test_a_web_sign_in_through_haproxy_holds_on_both_nodes(cluster: Cluster) -> None:
    """carol signs in with password and TOTP at HAProxy's HTTPS frontend; its round robin
    sends her next requests to both nodes in turn, and each node, asked directly (as HAProxy
    asks it: from a trusted address, over TLS), knows her by the cookie."""
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # the test's own certificate
    front = f"https://127.0.0.1:{cluster.lb_web}"
    form = urllib.parse.urlencode({
        "user": "carol", "password": PASSWORD, "next": "/",
        "code": totp.code_at(cluster.seed, datetime.now(UTC)),
    }).encode()  # fmt: skip
    jar = CookieJar()
    browser = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=tls), urllib.request.HTTPCookieProcessor(jar)
    )
    with browser.open(urllib.request.Request(f"{front}/login", form, {"Origin": front})) as page:
        assert page.status == 200 and "carol" in page.read().decode()
    [cookie] = [c for c in jar if c.name == COOKIE]
    assert cookie.secure

    def whoami(url: str, **headers: str) -> str:
        request = urllib.request.Request(
            f"{url}/api/v1/whoami", headers={"Cookie": f"{COOKIE}={cookie.value}", **headers}
        )
        with urllib.request.urlopen(request, timeout=30, context=tls) as response:
            who = json.loads(response.read())
            return f"{who['user']['name']} by {who['via']}"

    assert [whoami(front) for _ in range(4)] == ["carol by cookie"] * 4  # gw1, gw2, gw1, gw2
    for node in ("gw1", "gw2"):
        direct = f"http://127.0.0.1:{cluster.http[node]}"
        assert whoami(direct, **{"X-Forwarded-Proto": "https"}) == "carol by cookie"
    with pytest.raises(urllib.error.HTTPError) as refused:  # the cookie is the proof
        urllib.request.urlopen(f"{front}/api/v1/whoami", timeout=30, context=tls)
    assert refused.value.code == 401


def test_kill_9_of_a_worker_cuts_its_clients_and_the_restart_ends_them_as_worker_lost(
    cluster: Cluster,
) -> None:
    before = cluster.nodes()["gw1-w0"]
    on_worker = [s["id"] for s in cluster.live() if s["node"] == "gw1-w0"]
    assert on_worker, "the spread test left sessions on gw1-w0"
    others = {s["id"] for s in cluster.live() if s["node"] != "gw1-w0"}
    cut_before = cluster.cut()
    os.kill(int(before["pid"]), signal.SIGKILL)
    ends = _ends(cluster, on_worker)
    assert set(ends.values()) == {"worker lost"}
    restarted = eventually_blocking(
        lambda: (lambda n: n if n["state"] == "live" and n["pid"] != before["pid"] else None)(
            cluster.nodes()["gw1-w0"]
        ),
        what="gw1-w0 restarted by its supervisor",
    )
    assert restarted["sessions"] == 0
    assert {s["id"] for s in cluster.live()} == others  # the other workers' sessions go on
    eventually_blocking(
        lambda: cluster.cut() >= cut_before + len(on_worker), what="the worker's clients cut"
    )


def test_kill_9_of_a_whole_node_ends_its_sessions_on_the_survivor(cluster: Cluster) -> None:
    on_node = [s["id"] for s in cluster.live() if s["node"].startswith("gw2-")]
    assert on_node, "the spread test left sessions on gw2"
    cut_before = cluster.cut()
    cluster.serve["gw2"].kill()  # the supervisor: its workers die with it
    cluster.serve["gw2"].wait(30)
    ends = _ends(cluster, on_node)
    assert set(ends.values()) == {"node lost"}
    nodes = cluster.nodes()
    for name in ("gw2-w0", "gw2-w1"):
        assert nodes[name]["state"] == "lost" and nodes[name]["lost_by"].startswith("gw1-")
        assert nodes[name]["lost_reason"] == "node lost" and nodes[name]["sessions"] == 0
    for sid in on_node:  # on the shared recordings directory: sealed by the survivor
        [check] = cluster.api("gw1", f"/recordings/{sid}/verify")["items"]
        assert check["ok"], check
    eventually_blocking(
        lambda: cluster.cut() >= cut_before + len(on_node), what="the node's clients cut"
    )
    survivors = [c for c in cluster.clients if c.poll() is None]
    assert len([s for s in cluster.live() if s["node"].startswith("gw1-")]) == len(survivors)
