"""Raw kept-alive connections to web targets, for the fast path.

The same TLS decision as the aiohttp pool (``upstream.ssl_setting``): a pinned certificate is
compared after the handshake (SHA-256 of its DER form, in constant time) before a byte is
sent; a CA bundle, the system store or no verification as the target says. Idle connections
are kept per target up to ``keepalive`` seconds; one the upstream closed while idle leaves
the pool as it closes. At most ``limit`` connections per target, busy and idle together:
beyond it, ``checkout`` says no and the request takes the full path (whose pool queues).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import ssl
import time
from typing import Protocol

from aiohttp import Fingerprint

from gateway.http.target import WebTarget
from gateway.http.upstream import Timeouts, ssl_setting


class Receiver(Protocol):
    """What a connection hands its bytes to while a request uses it."""

    def upstream_data(self, data: bytes) -> None: ...

    def upstream_lost(self) -> None: ...

    def upstream_paused(self, paused: bool) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, pool: TargetPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.receiver: Receiver | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.receiver is not None:
            self.receiver.upstream_data(data)
        else:  # bytes nobody asked for: this connection's framing is no longer known
            self.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        receiver, self.receiver = self.receiver, None
        if receiver is not None:
            receiver.upstream_lost()

    def pause_writing(self) -> None:
        if self.receiver is not None:
            self.receiver.upstream_paused(True)

    def resume_writing(self) -> None:
        if self.receiver is not None:
            self.receiver.upstream_paused(False)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def pause_reading(self, paused: bool) -> None:
        if self.transport is not None and not self.closed:
            if paused:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def close(self) -> None:
        self.receiver = None
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()
        self.pool.forget(self)


class TargetPool:
    """The raw connections to one target with one set of settings."""

    def __init__(self, target: WebTarget, limit: int, keepalive: float, timeouts: Timeouts):
        self.target = target
        self.limit = limit
        self.keepalive = keepalive
        self.timeouts = timeouts
        self.idle: list[UpstreamConnection] = []
        self.count = 0
        self._members: set[UpstreamConnection] = set()
        setting = ssl_setting(target)  # raises TargetUnusable, as the aiohttp pool does
        self._pin: bytes | None = None
        self._ssl: ssl.SSLContext | None = None
        if isinstance(setting, Fingerprint):
            self._pin = bytes.fromhex(target.tls_fingerprint or "")
            self._ssl = _unverified()
        elif isinstance(setting, ssl.SSLContext):
            self._ssl = setting
        elif target.scheme == "https":
            self._ssl = ssl.create_default_context() if setting else _unverified()

    def checkout(self) -> UpstreamConnection | None:
        """A kept-alive connection, or None (connect one when ``room`` says so)."""
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive:
                conn.reused = True
                return conn
            conn.close()
        return None

    @property
    def room(self) -> bool:
        return self.count < self.limit

    async def connect(self) -> UpstreamConnection:
        """A new connection (TLS verified as the target says); raises OSError,
        ssl.SSLError or TimeoutError."""
        loop = asyncio.get_running_loop()
        target = self.target
        conn = UpstreamConnection(self)
        self.count += 1
        self._members.add(conn)
        try:
            async with asyncio.timeout(self.timeouts.connect):
                await loop.create_connection(
                    lambda: conn,
                    target.host,
                    target.port,
                    ssl=self._ssl,
                    server_hostname=target.host if self._ssl is not None else None,
                )
            if self._pin is not None:
                self._check_pin(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_pin(self, conn: UpstreamConnection) -> None:
        assert conn.transport is not None and self._pin is not None
        der = conn.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
        if not der or not secrets.compare_digest(hashlib.sha256(der).digest(), self._pin):
            raise ssl.SSLError("the target's certificate is not the pinned one")

    def release(self, conn: UpstreamConnection) -> None:
        """Back to the pool after a response that was read to its end."""
        conn.receiver = None
        if conn.closed:
            return
        conn.idle_since = time.monotonic()
        self.idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        if conn in self._members:
            self._members.discard(conn)
            self.count -= 1
        if conn in self.idle:
            self.idle.remove(conn)

    def close(self) -> None:
        for conn in list(self._members):
            conn.close()


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class FastPool:
    """The raw pools of this node's web targets, by target name; a target whose settings
    changed gets a new pool (the old one's connections finish and close)."""

    def __init__(
        self,
        timeouts: Timeouts,
        *,
        limit_per_target: int = 256,
        keepalive: float = 30.0,
    ) -> None:
        self.timeouts = timeouts
        self.limit = limit_per_target
        self.keepalive = keepalive
        self._pools: dict[str, TargetPool] = {}
        self._retired: list[TargetPool] = []

    def pool(self, target: WebTarget) -> TargetPool:
        """Raises TargetUnusable for settings that cannot be used."""
        pool = self._pools.get(target.name)
        if pool is not None and pool.target == target:
            return pool
        fresh = TargetPool(target, self.limit, self.keepalive, self.timeouts)
        if pool is not None:
            for conn in pool.idle:
                conn.close()
            self._retired.append(pool)
        self._pools[target.name] = fresh
        return fresh

    def close(self) -> None:
        for pool in [*self._pools.values(), *self._retired]:
            pool.close()
        self._pools.clear()
        self._retired.clear()
