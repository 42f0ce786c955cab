"""PROXY protocol on the SSH listener (``server.proxy_protocol``): only trusted balancers may
send a header, exactly the header is read, and the person's address from it is the one
audited; anything else is refused with a log line, a missing header after a timeout."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from gateway.app import Node
from gateway.proxies import (
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderReader,
    TrustedProxies,
)
from tests.eventually import eventually
from tests.nodes import start_test_node

BALANCER = "127.0.0.2"  # a loopback address of its own: the trusted balancer


def v2(
    src: str, port: int, dst: str = "192.0.2.1", dport: int = 2222, *, tlv: bytes = b""
) -> bytes:
    ip = ipaddress.ip_address(src)
    if ip.version == 4:
        family, body = 0x11, socket.inet_aton(src) + socket.inet_aton(dst)
    else:
        family = 0x21
        body = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, "::1")
    body += struct.pack("!HH", port, dport) + tlv
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


def parse(data: bytes, step: int = 1) -> ProxyHeader:
    """Feed ``data`` as the listener does: never more than the reader asks for."""
    reader = ProxyHeaderReader()
    pos = 0
    while reader.need:
        take = min(reader.need, step) if step else reader.need
        assert pos + take <= len(data), "the reader asked for more than the header"
        reader.feed(data[pos : pos + take])
        pos += take
    assert pos == len(data)
    assert reader.header is not None
    return reader.header


def test_headers_v2_and_v1_are_read_to_their_last_byte_and_no_further() -> None:
    assert parse(v2("203.0.113.7", 50000), step=0).source == ("203.0.113.7", 50000)
    assert parse(v2("203.0.113.7", 1, tlv=b"\x04\x00\x01x")).source == ("203.0.113.7", 1)
    assert parse(v2("2001:db8::7", 443), step=0).source == ("2001:db8::7", 443)
    local = V2_SIGNATURE + bytes([0x20, 0x00]) + b"\x00\x00"
    assert parse(local).source is None  # the balancer's own check: keeps its address
    assert parse(b"PROXY TCP4 198.51.100.4 192.0.2.1 4711 2222\r\n").source == (
        "198.51.100.4",
        4711,
    )
    assert parse(b"PROXY UNKNOWN\r\n").source is None


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n",  # no header at all
        V2_SIGNATURE + bytes([0x31, 0x11]) + b"\x00\x0c" + bytes(12),  # version 3
        V2_SIGNATURE + bytes([0x21, 0x11]) + b"\x00\x04" + bytes(4),  # addresses cut short
        V2_SIGNATURE + bytes([0x21, 0x11]) + b"\xff\xff",  # longer than allowed
        b"PROXY TCP4 not-an-ip 192.0.2.1 1 2\r\n",
        b"PROXY TCP6 198.51.100.4 192.0.2.1 1 2\r\n",  # family and address disagree
        b"PROXY TCP4 " + b"1" * 120,  # no end of line within the maximum
    ],
)
def test_garbled_headers_are_refused(data: bytes) -> None:
    reader = ProxyHeaderReader()
    with pytest.raises(ProxyHeaderError):
        pos = 0
        while reader.need and pos < len(data):
            take = min(reader.need, len(data) - pos)
            reader.feed(data[pos : pos + take])
            pos += take
        raise AssertionError(f"accepted as {reader.header}")


def test_forwarded_headers_count_only_from_trusted_proxies() -> None:
    trusted = TrustedProxies((ipaddress.ip_network("10.0.0.0/8"),))
    assert trusted.client("10.1.2.3", "198.51.100.1, 203.0.113.5") == "203.0.113.5"
    assert trusted.client("::ffff:10.1.2.3", "203.0.113.5") == "203.0.113.5"
    assert trusted.client("192.0.2.9", "203.0.113.5") == "192.0.2.9"  # anyone else: ignored
    assert trusted.client("10.1.2.3", "not an address") == "10.1.2.3"
    assert trusted.scheme("10.1.2.3", "https", "http") == "https"
    assert trusted.scheme("192.0.2.9", "https", "http") == "http"
    assert trusted.scheme("10.1.2.3", "gopher", "http") == "http"


@pytest.fixture
async def proxied(db_url: str, tmp_path: Path) -> AsyncIterator[Node]:
    node = await start_test_node(
        db_url,
        tmp_path,
        name="behind-haproxy",
        environ={"LOCKGATE_LIMITS_SSH_LOGIN_GRACE_TIME": "1"},  # also the header timeout
        server_fields={
            "proxy_protocol": True,
            "trusted_proxies": (ipaddress.ip_network(f"{BALANCER}/32"),),
        },
    )
    try:
        yield node
    finally:
        await node.stop()


async def _connect(node: Node, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", node.ssh_port, local_addr=(source, 0))


async def _closed_unspoken(reader: asyncio.StreamReader) -> None:
    """The gateway closes (or resets: bytes it never read) without a byte of SSH."""
    try:
        data = await reader.read()
    except ConnectionResetError:
        data = b""
    assert data == b""


async def test_only_trusted_balancers_with_a_header_get_ssh_and_the_header_is_audited(
    proxied: Node, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.ssh.proxied")
    reader, writer = await _connect(proxied, "127.0.0.1")  # not the balancer
    await _closed_unspoken(reader)
    writer.close()
    assert "SSH connection from 127.0.0.1 refused: PROXY protocol is on and 127.0.0.1 is not " \
        "in server.trusted_proxies" in caplog.text  # fmt: skip

    reader, writer = await _connect(proxied, BALANCER)
    writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")  # a balancer without send-proxy
    await _closed_unspoken(reader)
    writer.close()
    assert "refused: no PROXY protocol header" in caplog.text

    reader, writer = await _connect(proxied, BALANCER)  # says nothing: cut, no hang
    await _closed_unspoken(reader)
    writer.close()
    assert "refused: no PROXY protocol header in time" in caplog.text

    key = asyncssh.generate_private_key("ssh-ed25519")
    for header, client in (
        (v2("203.0.113.7", 50123), "203.0.113.7"),
        (b"PROXY TCP4 198.51.100.4 192.0.2.1 4711 2222\r\n", "198.51.100.4"),
    ):
        sock = socket.create_connection(
            ("127.0.0.1", proxied.ssh_port), source_address=(BALANCER, 0)
        )
        sock.sendall(header)
        with pytest.raises(asyncssh.PermissionDenied):  # SSH is spoken after the header
            await asyncssh.connect(
                sock=sock, username="nobody", known_hosts=None, client_keys=[key],
                preferred_auth="publickey",
            )  # fmt: skip

        async def audited(client: str = client) -> bool:
            events = await proxied.services.audit.events()
            return any(
                e.action == "auth.failure" and e.details.get("client") == client for e in events
            )

        await eventually(audited, what=f"the failed login audited from {client}")
