"""What a bridged channel asks of its live session: the narrow interface that lets the
channel modules (bridge, forward) depend on a shape instead of on the session class."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol

import asyncssh

from policy.models import Target
from recorder.anomaly import OutputWatcher
from recorder.writer import SessionRecording


class ChannelHost(Protocol):
    """One person's live SSH session, as its channels see it."""

    id: str
    target: str
    target_obj: Target
    gateway_host: str
    recording: SessionRecording | None
    bytes_up: int
    bytes_down: int
    disk_behind: bool
    has_command_rules: bool
    bridged: bool  # set once a channel reaches the target

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a task that lives as long as the session."""

    async def upstream(self) -> asyncssh.SSHClientConnection:
        """The gateway's own connection to the target (opened once, shared by channels)."""

    def describe_upstream_error(self, exc: BaseException) -> str:
        """A one-line, secret-free reason for the person."""

    async def authorize_channel(self, kind: str, command: str | None) -> str | None:
        """None if the channel may open, else the one-line reason."""

    async def authorize_forward(self, host: str, port: int) -> tuple[str | None, str]:
        """(None, destination to connect to) if the forward may open, else (reason, _)."""

    def ended_because(self, reason: str) -> None:
        """The session's true end reason, when it is not the client's doing (the first
        one given wins)."""

    def channel_refused(self, reason: str) -> None:
        """A channel was refused with this reason (the end reason if none is ever bridged)."""

    def check_shell_line(self, line: str) -> str | None:
        """The rule that blocks this shell line at Enter, if any."""

    def output_watcher(self) -> OutputWatcher | None:
        """A watcher for one channel's output, or None when no rule looks at output."""

    def observe_output(self, watcher: OutputWatcher, data: bytes) -> None:
        """Feed output to the anomaly rules."""

    def channel_closed(self, channel: Any) -> None:
        """A channel of the session has closed."""
