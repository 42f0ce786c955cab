"""The SSH listener: the algorithms offered and everything the SSH edge shares in a process.

The gateway offers only algorithms without known weaknesses (no CBC, no SHA-1 MACs, no
small groups); strict KEX keeps Terrapin out. Each accepted connection gets its own
``GatewayConnection`` (the callback class); the parts below are shared by all of them.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncssh

from gateway import sockets
from gateway.config import Listen
from gateway.metrics import Metrics
from gateway.oidc.device import DeviceLogins
from gateway.proxies import TrustedProxies
from gateway.services import Services
from gateway.sessions.enforce import Enforcer
from gateway.sessions.registry import SessionRegistry
from gateway.ssh import fastpath
from gateway.ssh.connection import GatewayConnection
from gateway.ssh.proxied import ProxiedAcceptor, options_for
from gateway.throttle import Throttle
from recorder.anomaly import AnomalyEngine
from recorder.recorder import Recorder

KEX = (
    # Post-quantum hybrid first (OpenSSH 9.9+ clients): a recorded session carries what a
    # future quantum computer must not be able to decrypt.
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256",
)
CIPHERS = (
    "chacha20-poly1305@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)
MACS = (
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
)


@dataclass
class SshGateway:
    """Everything the SSH edge needs, built once per process."""

    services: Services
    enforcer: Enforcer
    registry: SessionRegistry
    recorder: Recorder
    anomaly: AnomalyEngine
    throttle: Throttle
    host_keys: Sequence[asyncssh.SSHKey]
    metrics: Metrics = field(default_factory=Metrics)
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 0
    # SSH sign-in through the identity provider (None: no provider configured), and the
    # web address its links start with.
    devices: DeviceLogins | None = None
    device_url: str = ""
    # Session set-ups that may touch the database at once. A burst of hundreds of sessions
    # starting together otherwise queues on SQLite's write lock, whose sleep-and-retry
    # waiting starves some of them past the busy timeout; the rest wait here, in order.
    admission: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(16))
    # Connections not yet authenticated, per address (OpenSSH's MaxStartups and
    # PerSourceMaxStartups): beyond the caps a new connection is closed at once.
    startups: Counter[str] = field(default_factory=Counter)
    startups_refused: int = 0
    # Connections a trusted balancer announced (PROXY protocol): its address -> the person's.
    proxied: dict[tuple[str, int], str] = field(default_factory=dict)

    def admit(self, address: str) -> bool:
        """Whether a new, unauthenticated connection from ``address`` may go on (counted
        until ``authenticated`` or ``gone``)."""
        limits = self.services.config.limits
        total = sum(self.startups.values())
        per_source = max(1, limits.ssh_max_startups // 4) if limits.ssh_max_startups else 0
        if limits.ssh_max_startups and (
            total >= limits.ssh_max_startups or self.startups[address] >= per_source
        ):
            self.startups_refused += 1
            return False
        self.startups[address] += 1
        return True

    def startup_done(self, address: str) -> None:
        self.startups[address] -= 1
        if self.startups[address] <= 0:
            del self.startups[address]

    def set_address(self, host: str, port: int) -> None:
        """Where people reach this gateway; refusals tell them how to request access."""
        self.gateway_host, self.gateway_port = host, port
        self.services.policy.gateway_hint = f"ssh -p {port} {{user}}@{host}"

    def claim_address(self, peer: tuple[str, int], client: str) -> None:
        """The person's address for the connection from ``peer`` (a trusted balancer's
        PROXY protocol header said so); taken by its callbacks when it is made."""
        self.proxied[peer] = client

    def client_of(self, peer: tuple[str, int] | None) -> str | None:
        return self.proxied.pop(peer, None) if peer is not None and self.proxied else None

    async def listen(
        self, host: str, port: int, *, sock: socket.socket | None = None
    ) -> asyncssh.SSHAcceptor | ProxiedAcceptor:
        """Listen on ``host:port``, or on ``sock`` (a worker's shared socket); behind a
        PROXY protocol balancer (``server.proxy_protocol``) through ``proxied``."""
        server = self.services.config.server
        fastpath.install(server.ssh_fastpath)
        kwargs = self._server_options()
        if server.proxy_protocol:
            if sock is None:
                sock = sockets.bind(Listen(host, port), shared=False)
            acceptor: asyncssh.SSHAcceptor | ProxiedAcceptor = ProxiedAcceptor(
                sock,
                await options_for(**kwargs),
                TrustedProxies(server.trusted_proxies),
                self.claim_address,
                self.services.config.limits.ssh_login_grace_time,
            )
            acceptor.start()
        elif sock is not None:
            acceptor = await asyncssh.listen(sock=sock, **kwargs)
        else:
            acceptor = await asyncssh.listen(host, port, **kwargs)
        self.set_address(self.gateway_host, int(acceptor.get_port()))
        return acceptor

    def _server_options(self) -> dict[str, object]:
        return dict(
            server_factory=lambda: GatewayConnection(self),
            server_host_keys=list(self.host_keys),
            kex_algs=list(KEX),
            encryption_algs=list(CIPHERS),
            mac_algs=list(MACS),
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
            encoding=None,
            line_editor=False,
            login_timeout=self.services.config.limits.ssh_login_grace_time,
            keepalive_interval=60,
            keepalive_count_max=3,
        )
