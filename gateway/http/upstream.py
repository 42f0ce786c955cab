"""Connections to web targets: one pool per target, TLS as the target says, timeouts.

Each target gets its own ``aiohttp.ClientSession`` over its own ``TCPConnector`` (keep-alive,
a connection limit, DNS cached briefly), built from the target's settings and rebuilt when
they change. The pool is shared by everyone using the target, so it holds nothing of a
person: no cookie jar (``DummyCookieJar``: upstream cookies go to the browser, never into the
pool), no automatic headers, no decompression (bytes pass through with their
``Content-Encoding``), no redirects followed, no proxy from the environment.

TLS, the security decision per target (``gateway.http.target``):

- a pinned ``tls_fingerprint``: the upstream's certificate must be exactly that one (SHA-256
  of its DER encoding; aiohttp's ``Fingerprint``). Chain and host name are then not checked:
  the pin is stronger than both, and it is how a self-signed console is reached safely;
- else ``tls_ca``: the chain must verify against that PEM bundle alone, with the host name;
- else the system's trust store, with the host name;
- ``tls_verify = False`` turns verification off (the CLI warns loudly and audits it).

Timeouts: ``connect`` (TCP and TLS set-up), ``first_byte`` (from the end of the request body
to the response head; aiohttp starts its read timer only once the body is sent) and ``idle``
(no bytes from the upstream for that long while a body streams, e.g. a quiet SSE stream).
Whether a request reused a pooled connection is reported through a ``Attempt`` passed as
the trace context (aiohttp's ``on_connection_reuseconn``/``on_connection_create_end``).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from types import SimpleNamespace

import aiohttp
from aiohttp import (
    ClientSession,
    ClientTimeout,
    DummyCookieJar,
    Fingerprint,
    TCPConnector,
    TraceConfig,
)

from gateway.http.target import TargetUnusable, WebTarget

READ_BUFSIZE = 256 * 1024
MAX_RESPONSE_FIELD = 16 * 1024  # an upstream's Set-Cookie may be large


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    first_byte: float = 60.0
    idle: float = 300.0


@dataclass
class Attempt:
    """Filled in by the trace hooks while one request is sent."""

    reused: bool | None = None


def ssl_setting(target: WebTarget) -> ssl.SSLContext | Fingerprint | bool:
    """What aiohttp's connector is given for ``ssl``; raises TargetUnusable for a CA bundle
    that does not load."""
    if target.scheme != "https":
        return True
    if target.tls_fingerprint:
        return Fingerprint(bytes.fromhex(target.tls_fingerprint))
    if not target.tls_verify:
        return False
    try:
        if target.tls_ca:
            return ssl.create_default_context(cadata=target.tls_ca)
        return ssl.create_default_context()
    except (ssl.SSLError, ValueError):
        raise TargetUnusable(f"target {target.name}: tls_ca holds no usable certificate") from None


async def _created(_: ClientSession, ctx: SimpleNamespace, __: object) -> None:
    if isinstance(ctx.trace_request_ctx, Attempt):
        ctx.trace_request_ctx.reused = False


async def _reused(_: ClientSession, ctx: SimpleNamespace, __: object) -> None:
    if isinstance(ctx.trace_request_ctx, Attempt):
        ctx.trace_request_ctx.reused = True


def _trace() -> TraceConfig:
    trace = TraceConfig()
    trace.on_connection_create_end.append(_created)
    trace.on_connection_reuseconn.append(_reused)
    return trace


class UpstreamPool:
    """The client sessions of this node's web targets, by target name."""

    def __init__(
        self,
        timeouts: Timeouts | None = None,
        *,
        limit_per_target: int = 256,
        keepalive: float = 30.0,
    ) -> None:
        self.timeouts = timeouts or Timeouts()
        self.limit = limit_per_target
        self.keepalive = keepalive
        self._clients: dict[str, tuple[WebTarget, ClientSession]] = {}
        self._retired: list[ClientSession] = []
        self._trace = _trace()

    def client(self, target: WebTarget) -> ClientSession:
        """The session for ``target``; a new one when its settings changed (the old one
        finishes what it carries and is closed with the pool)."""
        entry = self._clients.get(target.name)
        if entry is not None and entry[0] == target and not entry[1].closed:
            return entry[1]
        if entry is not None:
            self._retired.append(entry[1])
        setting = ssl_setting(target)
        connector = TCPConnector(
            limit=0,
            limit_per_host=self.limit,
            keepalive_timeout=self.keepalive,
            ttl_dns_cache=10,
            ssl=setting,
        )
        session = ClientSession(
            connector=connector,
            timeout=ClientTimeout(
                total=None, sock_connect=self.timeouts.connect, sock_read=self.timeouts.first_byte
            ),
            cookie_jar=DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            auto_decompress=False,
            trust_env=False,
            trace_configs=[self._trace],
            read_bufsize=READ_BUFSIZE,
            max_field_size=MAX_RESPONSE_FIELD,
            max_line_size=MAX_RESPONSE_FIELD,
            requote_redirect_url=False,
        )
        self._clients[target.name] = (target, session)
        return session

    def streaming(self, response: aiohttp.ClientResponse) -> None:
        """The head has arrived: from now on the read timeout is the idle timeout."""
        connection = response.connection
        if connection is not None and connection.protocol is not None:
            connection.protocol.read_timeout = self.timeouts.idle

    async def aclose(self) -> None:
        sessions = [s for _, s in self._clients.values()] + self._retired
        self._clients.clear()
        self._retired.clear()
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


@dataclass(frozen=True)
class UpstreamFailure:
    status: int  # 502 or 504
    what: str  # one line for the person; never a secret


def describe_failure(exc: BaseException) -> UpstreamFailure:
    """What went wrong reaching the upstream, for the refusal page and the recording."""
    if isinstance(exc, aiohttp.ServerFingerprintMismatch):
        return UpstreamFailure(502, "the target's certificate is not the pinned one")
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        detail = getattr(exc.certificate_error, "verify_message", "") or "not trusted"
        return UpstreamFailure(502, f"the target's certificate did not verify ({detail})")
    if isinstance(exc, aiohttp.ClientSSLError):
        return UpstreamFailure(502, "the TLS connection to the target failed")
    if isinstance(exc, TimeoutError):
        return UpstreamFailure(504, "the target did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamFailure(502, "the target could not be reached")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamFailure(502, "the target closed the connection")
    if isinstance(exc, TargetUnusable):
        return UpstreamFailure(502, str(exc))
    return UpstreamFailure(502, f"the target's answer could not be read ({type(exc).__name__})")
