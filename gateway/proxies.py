"""Load balancers in front of the gateway: who is trusted to say where a connection is from.

``server.trusted_proxies`` lists the balancers' addresses (CIDRs). Only a connection from one
of them may carry a PROXY protocol header (SSH, ``server.proxy_protocol``) or have its
``X-Forwarded-For`` / ``X-Forwarded-Proto`` headers believed (HTTP). From anyone else the
headers are ignored on HTTP, and with PROXY protocol on an SSH connection is refused.

PROXY protocol (HAProxy's specification): version 2, the binary header, and version 1, the
text line, are read by ``ProxyHeaderReader``, a sans-IO parser: it says how many more bytes
it needs, so the caller reads exactly the header and nothing of the SSH stream after it.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import struct
from dataclasses import dataclass

from gateway.config import IPNetwork

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # bytes, CRLF included (the specification's maximum)
V2_MAX = 16 + 1024  # header and addresses/TLVs we accept; HAProxy sends far less


class ProxyHeaderError(ValueError):
    """The connection did not start with a well-formed PROXY protocol header."""


@dataclass(frozen=True)
class ProxyHeader:
    """Where the balancer says the connection is from; ``source`` None: a LOCAL connection
    (the balancer's own health check), which keeps the balancer's address."""

    source: tuple[str, int] | None


class ProxyHeaderReader:
    """Feed it bytes; ``need`` says how many more it wants (0: ``header`` is set)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.header: ProxyHeader | None = None
        self._v1 = False

    @property
    def need(self) -> int:
        if self.header is not None:
            return 0
        if self._v1:
            return 1  # a text line: one byte at a time, to stop at its CRLF
        if len(self.buffer) < 6:  # enough to tell v1 ("PROXY ") from v2
            return 6 - len(self.buffer)
        if len(self.buffer) < 16:
            return 16 - len(self.buffer)
        length = int(struct.unpack_from("!H", self.buffer, 14)[0])
        return 16 + length - len(self.buffer)

    def feed(self, data: bytes) -> None:
        """Raises ProxyHeaderError as soon as the bytes cannot be a header."""
        self.buffer += data
        if self._v1:
            self._feed_v1()
            return
        if self.buffer.startswith(b"PROXY "):
            self._v1 = True
            self._feed_v1()
            return
        if len(self.buffer) < 16:
            if not V2_SIGNATURE.startswith(bytes(self.buffer[:12])) and not (
                b"PROXY ".startswith(bytes(self.buffer[:6]))
            ):
                raise ProxyHeaderError("no PROXY protocol header")
            return
        if not self.buffer.startswith(V2_SIGNATURE):
            raise ProxyHeaderError("no PROXY protocol header")
        version, command = self.buffer[12] >> 4, self.buffer[12] & 0x0F
        length = struct.unpack_from("!H", self.buffer, 14)[0]
        if version != 2 or command > 1:
            raise ProxyHeaderError("unsupported PROXY protocol version or command")
        if 16 + length > V2_MAX:
            raise ProxyHeaderError("PROXY protocol header too long")
        if len(self.buffer) == 16 + length:
            self.header = _v2(command, self.buffer[13], bytes(self.buffer[16:]))

    def _feed_v1(self) -> None:
        if len(self.buffer) > V1_MAX:
            raise ProxyHeaderError("PROXY protocol v1 line too long")
        if not self.buffer.endswith(b"\r\n"):
            return
        parts = bytes(self.buffer[:-2]).decode("ascii", "replace").split(" ")
        if parts[1:2] == ["UNKNOWN"]:
            self.header = ProxyHeader(None)
            return
        if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
            raise ProxyHeaderError("malformed PROXY protocol v1 line")
        try:
            address = ipaddress.ip_address(parts[2])
            port = int(parts[4])
        except ValueError:
            raise ProxyHeaderError("malformed PROXY protocol v1 address") from None
        if not 0 <= port <= 65535 or (address.version == 4) != (parts[1] == "TCP4"):
            raise ProxyHeaderError("malformed PROXY protocol v1 address")
        self.header = ProxyHeader((str(address), port))


def _v2(command: int, family: int, body: bytes) -> ProxyHeader:
    if command == 0:  # LOCAL: the balancer's own connection
        return ProxyHeader(None)
    af, proto = family >> 4, family & 0x0F
    if proto not in (0, 1):  # UNSPEC or STREAM
        raise ProxyHeaderError("PROXY protocol header for a datagram connection")
    if af == 1:  # IPv4: src, dst, src port, dst port
        if len(body) < 12:
            raise ProxyHeaderError("PROXY protocol v2 IPv4 addresses truncated")
        src = socket.inet_ntop(socket.AF_INET, body[0:4])
        port = struct.unpack_from("!H", body, 8)[0]
        return ProxyHeader((src, port))
    if af == 2:  # IPv6
        if len(body) < 36:
            raise ProxyHeaderError("PROXY protocol v2 IPv6 addresses truncated")
        src = socket.inet_ntop(socket.AF_INET6, body[0:16])
        port = struct.unpack_from("!H", body, 32)[0]
        return ProxyHeader((src, port))
    return ProxyHeader(None)  # UNSPEC or a unix socket: no address to take


@dataclass(frozen=True)
class TrustedProxies:
    networks: tuple[IPNetwork, ...] = ()

    def trusts(self, address: str) -> bool:
        return bool(self.networks) and _trusted(self.networks, address)

    def client(self, peer: str, forwarded_for: str) -> str:
        """The person's address: the last hop of ``X-Forwarded-For`` (the one the trusted
        balancer saw) when ``peer`` is trusted and the header is a valid address, else
        ``peer``."""
        if not forwarded_for or not self.trusts(peer):
            return peer
        last = forwarded_for.split(",")[-1].strip()
        try:
            return str(ipaddress.ip_address(last))
        except ValueError:
            return peer

    def scheme(self, peer: str, forwarded_proto: str, connection: str) -> str:
        """``X-Forwarded-Proto`` (http or https) from a trusted peer, else the connection's."""
        if not self.trusts(peer):
            return connection
        value = forwarded_proto.split(",")[0].strip().lower()
        return value if value in ("http", "https") else connection


@functools.lru_cache(maxsize=4096)
def _trusted(networks: tuple[IPNetwork, ...], address: str) -> bool:
    """Asked for every web request with the connection's peer: parsed once per address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)
