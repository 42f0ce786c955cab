"""The SSH listener behind a load balancer that speaks PROXY protocol (``server.proxy_protocol``).

Each accepted connection must come from one of ``server.trusted_proxies`` and start with a
PROXY protocol header (v2, or v1) within ``HEADER_TIMEOUT`` seconds (at most the login grace
time); exactly the header's bytes are read, then the socket is handed to asyncssh as a
connection its listener would have accepted. The person's address from the header is what
the connection callbacks see (audit, throttling, session records, ``MaxStartups``). A
connection from anyone else, one without a well-formed header, or one whose header is late
is closed, with one log line saying which; nothing of SSH is spoken on it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from asyncssh.connection import SSHServerConnection, SSHServerConnectionOptions

from gateway.proxies import ProxyHeader, ProxyHeaderError, ProxyHeaderReader, TrustedProxies

log = logging.getLogger(__name__)
HEADER_TIMEOUT = 10.0  # seconds; the login grace time when that is shorter


class ProxiedAcceptor:
    """What the node needs of an ``asyncssh.SSHAcceptor``: the port, the sockets, close."""

    def __init__(
        self,
        sock: socket.socket,
        options: SSHServerConnectionOptions,
        trusted: TrustedProxies,
        claim: Callable[[tuple[str, int], str], None],
        header_timeout: float,
    ) -> None:
        self._sock = sock
        self._options = options
        self._trusted = trusted
        self._claim = claim  # tells the connection callbacks the person's address
        self._timeout = min(HEADER_TIMEOUT, header_timeout)
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.refused = 0

    @property
    def sockets(self) -> list[socket.socket]:
        return [self._sock] if self._task is not None and not self._task.done() else []

    def get_port(self) -> int:
        return int(self._sock.getsockname()[1])

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._accept())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for task in self._pending:
            task.cancel()
        self._sock.close()

    async def wait_closed(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, *self._pending, return_exceptions=True)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(self._sock)
            except OSError as exc:  # out of descriptors, a reset before accept: go on
                log.warning("SSH accept failed: %s", exc.strerror)
                await asyncio.sleep(0.1)
                continue
            task = asyncio.ensure_future(self._handshake(conn, peer))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _handshake(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        address = str(peer[0])
        if not self._trusted.trusts(address):
            self.refused += 1
            log.warning(
                "SSH connection from %s refused: PROXY protocol is on and %s is not in "
                "server.trusted_proxies",
                address,
                address,
            )
            conn.close()
            return
        try:
            async with asyncio.timeout(self._timeout):
                header = await _read_header(conn)
        except (ProxyHeaderError, TimeoutError, OSError) as exc:
            self.refused += 1
            why = "no PROXY protocol header in time" if isinstance(exc, TimeoutError) else exc
            log.info("SSH connection from proxy %s refused: %s", address, why)
            conn.close()
            return
        client = header.source[0] if header.source is not None else address
        loop = asyncio.get_running_loop()
        self._claim((address, int(peer[1])), client)
        try:
            await loop.connect_accepted_socket(
                lambda: SSHServerConnection(loop, self._options), conn
            )
        except OSError:
            conn.close()


async def _read_header(conn: socket.socket) -> ProxyHeader:
    """Exactly the header's bytes (never any of the SSH stream after it)."""
    loop = asyncio.get_running_loop()
    reader = ProxyHeaderReader()
    while reader.need:
        data = await loop.sock_recv(conn, reader.need)
        if not data:
            raise ProxyHeaderError("the connection closed before its PROXY protocol header")
        reader.feed(data)
    assert reader.header is not None
    return reader.header


async def options_for(**kwargs: object) -> SSHServerConnectionOptions:
    """The server options ``asyncssh.listen`` would build from the same arguments."""
    options: SSHServerConnectionOptions = await SSHServerConnectionOptions.construct(None, **kwargs)
    return options
