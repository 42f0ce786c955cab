"""Local port forwarding (``ssh -L``, ``-W``), tunnelled through the target's own SSH
connection.

Allowed only when the grant's rule lists ``port_forward`` and the destination is on the
rule's ``forward_to`` allowlist, matched on the normalised address (``policy.forwarding``,
through ``gateway.access``); the target is asked to connect to that normalised address, never
to another reading of the string the client sent.
"""

from __future__ import annotations

from typing import Any

import asyncssh

from gateway.ssh.ports import ChannelHost


def _refuse(message: str) -> asyncssh.ChannelOpenError:
    return asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, message)


async def open_forward(live: ChannelHost, host: str, port: int) -> Any:
    refusal, destination = await live.authorize_forward(host, port)
    if refusal is not None:
        raise _refuse(refusal)
    upstream = await live.upstream()
    bridge = TcpBridge(live)
    try:
        bridge.upstream, _ = await upstream.create_connection(
            lambda: _UpstreamTcp(bridge), destination, port
        )
    except asyncssh.ChannelOpenError as exc:
        raise _refuse(f"the target could not open {destination}:{port} ({exc.reason})") from None
    live.bridged = True
    if live.recording is not None:
        live.recording.port_forward(destination, port)
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
