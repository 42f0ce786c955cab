"""Bridging one client channel to one upstream channel, byte for byte.

Raw bytes both ways (no encoding). What the target sends within one event-loop pass is
written to the client as one write, which halves the packet count over a pty (PERF-NOTES
#1). Flow control is end to end: when one side's send buffer is full, the other side stops
reading, so a slow client pauses the target and buffers stay bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import cast

import asyncssh

from gateway.errors import end_reason
from gateway.ssh.fastpath import write_data
from gateway.ssh.ports import ChannelHost
from recorder.commandline import LineTracker
from recorder.scp import ScpCommand, ScpTracker, legacy_scp

ENV_ALLOW_PREFIXES = ("LC_",)
ENV_ALLOW = frozenset({"LANG", "TZ"})


def allowed_env(env: Mapping[str, str]) -> dict[str, str]:
    """The client's environment variables that may reach the target (never ``LD_*``)."""
    return {
        k: v
        for k, v in env.items()
        if (k in ENV_ALLOW or k.startswith(ENV_ALLOW_PREFIXES))
        and not k.startswith("LD_")
        and len(v) <= 1024
    }


class ClientChannel(asyncssh.SSHServerSession[bytes]):
    """The person's side of one channel (shell, exec or sftp)."""

    def __init__(self, live: ChannelHost) -> None:
        self.live = live
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None
        self.kind = "shell"
        self.command: str | None = None
        self.scp_command: ScpCommand | None = None
        self.scp: ScpTracker | None = None
        self.pty: tuple[str, tuple[int, int, int, int], Mapping[int, int]] | None = None
        self.upstream: asyncssh.SSHClientChannel[bytes] | None = None
        self.early: list[bytes] = []
        self.eof_pending = False
        self.lines = LineTracker()
        self.watcher = live.output_watcher()
        self.closed = False
        self.holds: set[str] = {"recording"} if live.disk_behind else set()

    # --- requests ----------------------------------------------------------------
    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        self.pty = (term_type, term_size, term_modes)
        if self.live.recording is not None:
            self.live.recording.terminal(term_type, term_size[0], term_size[1])
        return True

    def shell_requested(self) -> bool:
        self.kind = "shell"
        return True

    def exec_requested(self, command: str) -> bool:
        """An exec; a plain legacy scp server (``scp -t``/``scp -f``) is a file transfer,
        authorized as channel kind ``sftp`` and its files recorded like SFTP's."""
        self.kind, self.command = "exec", command
        self.scp_command = legacy_scp(command)
        if self.scp_command is not None:
            self.kind = "scp"
        return True

    @property
    def transfer(self) -> bool:
        """File transfer (SFTP or legacy scp): no terminal data to record or watch."""
        return self.kind in ("sftp", "scp")

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            return False
        self.kind = "sftp"
        return True

    def session_started(self) -> None:
        assert self.chan is not None
        self.chan.pause_reading()  # until the upstream channel is ready
        self.live.spawn(self._start())

    async def _start(self) -> None:
        assert self.chan is not None
        channel_kind = "sftp" if self.transfer else self.kind
        refusal = await self.live.authorize_channel(channel_kind, self.command)
        if refusal is not None:
            self.live.channel_refused(refusal)
            self.refuse(refusal)
            return
        try:
            upstream = await self.live.upstream()
            term_type = term_size = term_modes = None
            if self.pty is not None:
                term_type, size, term_modes = self.pty
                term_size = size
            env = allowed_env(self.chan.get_environment())
            self.upstream, _ = await upstream.create_session(
                lambda: UpstreamChannel(self),
                command=self.command if self.kind in ("exec", "scp") else None,
                subsystem="sftp" if self.kind == "sftp" else None,
                request_pty=self.pty is not None,
                term_type=term_type,
                term_size=term_size,
                term_modes=term_modes or {},
                env=cast("dict[str | bytes, str | bytes]", env),
                encoding=None,
            )
        except Exception as exc:
            self.live.ended_because(end_reason(exc))
            self.refuse(self.live.describe_upstream_error(exc))
            return
        self.live.bridged = True
        rec = self.live.recording
        if self.scp_command is not None and rec is not None:
            self.scp = rec.scp_channel(self.scp_command)
        if self.holds:
            self.upstream.pause_reading()
        for data in self.early:
            self.upstream.write(data)
        self.early.clear()
        if self.eof_pending:
            self.upstream.write_eof()
        self.chan.resume_reading()

    def refuse(self, message: str, status: int = 1) -> None:
        if self.chan is None or self.closed:
            return
        self.chan.write_stderr(f"lockgate: {message}\r\n".encode())
        self.chan.exit(status)

    # --- data --------------------------------------------------------------------
    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.live.bytes_up += len(data)
        rec = self.live.recording
        if self.kind == "sftp":
            if rec is not None:
                rec.sftp_client(data)
        elif self.kind == "scp":
            self.scp_data(data, from_client=True)
        else:
            if rec is not None:
                rec.input(data)
            if self.kind == "shell" and self.live.has_command_rules:
                data = self._check_lines(data)
                if not data:
                    return
        if self.upstream is None:
            self.early.append(data)
        else:
            self.upstream.write(data)

    def scp_data(self, data: bytes, *, from_client: bool) -> None:
        if self.scp is None or self.scp_command is None:
            return
        if from_client == (self.scp_command.direction == "upload"):
            self.scp.source(data)
        else:
            self.scp.sink(data)

    def _check_lines(self, data: bytes) -> bytes:
        """Check each line completed in ``data`` before its Enter reaches the target."""
        out = bytearray()
        start = 0
        for i, byte in enumerate(data):
            if byte not in (0x0D, 0x0A):
                continue
            line = self.lines.feed(data[start : i + 1])
            verdict = self.live.check_shell_line(line[-1].text) if line else None
            if verdict is not None:
                # End of line, erase it, then an empty Enter: the target's prompt (readline or
                # a canonical tty) discards the line without a signal flushing typeahead.
                out += data[start:i] + b"\x05\x15" + data[i : i + 1]
                self.notify(f"[lockgate] command blocked by rule {verdict}")
            else:
                out += data[start : i + 1]
            start = i + 1
        self.lines.feed(data[start:])
        out += data[start:]
        return bytes(out)

    def eof_received(self) -> bool:
        if self.upstream is None:
            self.eof_pending = True
        else:
            self.upstream.write_eof()
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if self.live.recording is not None:
            self.live.recording.resize(width, height)
        if self.upstream is not None:
            self.upstream.change_terminal_size(width, height, pixwidth, pixheight)

    def signal_received(self, signal: str) -> None:
        if self.upstream is not None:
            self.upstream.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        if self.upstream is not None:
            self.upstream.send_break(msec)
            return True
        return False

    def pause_writing(self) -> None:
        self.hold("client", True)

    def resume_writing(self) -> None:
        self.hold("client", False)

    def hold(self, reason: str, on: bool) -> None:
        """Stop reading from the target while any reason holds: the person's side cannot
        take more ("client"), or the recording's disk is behind ("recording")."""
        held = bool(self.holds)
        if on:
            self.holds.add(reason)
        else:
            self.holds.discard(reason)
        if self.upstream is not None and held != bool(self.holds):
            if self.holds:
                self.upstream.pause_reading()
            else:
                self.upstream.resume_reading()

    def notify(self, line: str) -> None:
        if self.chan is not None and not self.closed:
            self.chan.write_stderr(f"\r\n{line}\r\n".encode())

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        if self.upstream is not None:
            self.upstream.close()
        self.live.channel_closed(self)


class UpstreamChannel(asyncssh.SSHClientSession[bytes]):
    """The target's side of one channel."""

    def __init__(self, client: ClientChannel) -> None:
        self.client = client
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.scheduled = False
        self.status: int | None = None
        self.signal: tuple[str, bool, str, str] | None = None
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        (self.err if datatype == asyncssh.EXTENDED_DATA_STDERR else self.out).append(data)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        chan, live = self.client.chan, self.client.live
        if chan is None or self.client.closed:
            self.out.clear()
            self.err.clear()
            return
        rec = live.recording
        if self.out:
            data = b"".join(self.out) if len(self.out) > 1 else self.out[0]
            self.out.clear()
            live.bytes_down += len(data)
            if rec is not None:
                if self.client.kind == "sftp":
                    rec.sftp_server(data)
                elif self.client.kind == "scp":
                    self.client.scp_data(data, from_client=False)
                else:
                    rec.output(data)
            if self.client.watcher is not None and not self.client.transfer:
                live.observe_output(self.client.watcher, data)
            write_data(chan, data)
        if self.err:
            data = b"".join(self.err)
            self.err.clear()
            live.bytes_down += len(data)
            if self.client.kind != "sftp":
                if rec is not None:
                    rec.output(data)
                if self.client.watcher is not None:
                    live.observe_output(self.client.watcher, data)
            chan.write_stderr(data)

    def eof_received(self) -> bool:
        self.flush()
        if self.client.chan is not None and not self.client.closed:
            self.client.chan.write_eof()
        return True

    def exit_status_received(self, status: int) -> None:
        self.status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.signal = (signal, core_dumped, msg, lang)

    def pause_writing(self) -> None:
        if self.client.chan is not None:
            self.client.chan.pause_reading()

    def resume_writing(self) -> None:
        if self.client.chan is not None:
            self.client.chan.resume_reading()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.flush()
        chan = self.client.chan
        rec = self.client.live.recording
        if rec is not None and self.client.kind != "sftp":
            rec.exit(self.status, self.signal[0] if self.signal else None)
        if chan is None or self.client.closed:
            return
        if self.signal is not None:
            chan.exit_with_signal(*self.signal)
        elif self.status is not None:
            chan.exit(self.status)
        else:
            if exc is not None:
                self.client.live.ended_because("target connection lost")
                chan.write_stderr(b"lockgate: the connection to the target was lost\r\n")
            chan.exit(255)
