"""Local port forwarding (``ssh -L``), tunnelled through the target's own SSH connection.

Allowed only when the grant's rule lists ``port_forward``; never to the target's own SSH
port and never to the gateway itself, so a forward cannot be used to skip the gateway.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import asyncssh

from gateway.ssh.ports import ChannelHost

# Names for "this host" as seen from the target (compared, never bound).
LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "ip6-localhost"}  # noqa: S104


def _refuse(message: str) -> asyncssh.ChannelOpenError:
    return asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, message)


def _gateway_names(live: ChannelHost) -> set[str]:
    """The gateway's names and addresses as the target could reach them. Loopback is left
    out: seen from the target, it is the target itself."""
    names = {live.gateway_host, socket.gethostname()}
    with contextlib.suppress(OSError):
        names.update(str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None))
    return {
        n.lower() for n in names if n and n.lower() not in LOCAL_NAMES and not n.startswith("127.")
    }


async def open_forward(live: ChannelHost, host: str, port: int) -> Any:
    refusal = await live.authorize_channel("port_forward", None)
    if refusal is not None:
        raise _refuse(refusal)
    target = live.target_obj
    dest = host.lower().strip("[]")
    if port == target.port and (dest in LOCAL_NAMES or dest == (target.host or "").lower()):
        raise _refuse("forwarding to the target's own SSH port is not allowed")
    if dest in _gateway_names(live):
        raise _refuse("forwarding to the gateway itself is not allowed")
    upstream = await live.upstream()
    bridge = TcpBridge(live)
    try:
        bridge.upstream, _ = await upstream.create_connection(
            lambda: _UpstreamTcp(bridge), host, port
        )
    except asyncssh.ChannelOpenError as exc:
        raise _refuse(f"the target could not open {host}:{port} ({exc.reason})") from None
    if live.recording is not None:
        live.recording.port_forward(host, port)
    return bridge


class TcpBridge(asyncssh.SSHTCPSession[bytes]):
    def __init__(self, live: ChannelHost) -> None:
        self.live = live
        self.chan: Any = None
        self.upstream: Any = None

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.live.bytes_up += len(data)
        self.upstream.write(data)

    def eof_received(self) -> bool:
        self.upstream.write_eof()
        return True

    def pause_writing(self) -> None:
        self.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.upstream.resume_reading()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


class _UpstreamTcp(asyncssh.SSHTCPSession[bytes]):
    def __init__(self, bridge: TcpBridge) -> None:
        self.bridge = bridge

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.bridge.live.bytes_down += len(data)
        self.bridge.chan.write(data)

    def eof_received(self) -> bool:
        self.bridge.chan.write_eof()
        return True

    def pause_writing(self) -> None:
        self.bridge.chan.pause_reading()

    def resume_writing(self) -> None:
        self.bridge.chan.resume_reading()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.bridge.chan.close()
