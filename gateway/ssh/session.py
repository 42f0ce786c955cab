"""One person's live SSH session to one target: the registry's handle for it.

It opens the session record and the recording before the upstream is used, connects the
upstream with the vaulted credential once the grant check passed, and asks the core for
every decision: channel authorization (``gateway.access``), what an anomaly hit does
(``gateway.sessions.enforce``), the session's record (``gateway.sessions.records``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncssh

from gateway.credentials import UpstreamCredential
from gateway.db import completed
from gateway.errors import UpstreamError, UpstreamUnreachable, end_reason
from gateway.metrics import kill_reason
from gateway.provision.service import ProvisionRefused
from gateway.sessions.records import NewSession, new_session_id
from gateway.ssh.bridge import ClientChannel
from gateway.ssh.login import Login
from gateway.ssh.upstream import connect_upstream
from policy.models import Target
from recorder.anomaly import AnomalyHit, OutputWatcher
from recorder.writer import SessionRecording

if TYPE_CHECKING:
    from gateway.ssh.listener import SshGateway

log = logging.getLogger(__name__)


class LiveSshSession:
    """One person's connection to one target: the registry's handle for it."""

    def __init__(
        self,
        gw: SshGateway,
        conn: asyncssh.SSHServerConnection,
        login: Login,
        target: Target,
        account: str,
        grant_id: str | None,
        expires_at: datetime | None,
        client_addr: str,
    ) -> None:
        self.gw = gw
        self.conn = conn
        self.kind = "ssh"
        self.id = new_session_id()
        self.user = login.user
        self.login = login
        self.target_obj = target
        self.target = target.name
        self.account = account
        # On a provisioned target the grant's own account (ephemeral) is logged in as.
        self.upstream_account = gw.services.provisioner.upstream_name(
            login.user, target, account, grant_id
        )
        self.grant_id = grant_id
        self.expires_at = expires_at
        self.client_addr = client_addr
        self.bytes_up = 0
        self.bytes_down = 0
        self.recording: SessionRecording | None = None
        self.channels: list[ClientChannel] = []
        self._upstream: asyncio.Future[asyncssh.SSHClientConnection] | None = None
        # Set once a channel is authorized: only then is the credential checked out and used.
        self._authorized: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sftp_ops: list[dict[str, Any]] = []
        self._sftp_audit: asyncio.Task[None] | None = None
        self._ended = False
        self._finishing: asyncio.Future[None] | None = None
        self._reconnected = False
        self.end_reason: str | None = None
        self.bridged = False  # a channel of this session reached the target
        self._refusal: str | None = None
        self._upstream_audited = False
        self._provisioned = False
        self.has_command_rules = bool(gw.anomaly.commands)
        self.disk_behind = False
        self.gateway_host = gw.gateway_host
        self.record = NewSession(
            self.id,
            "ssh",
            self.user,
            self.target,
            account,
            grant_id,
            client_addr,
            self.upstream_account if self.upstream_account != account else None,
        )

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def open(self) -> None:
        """Audit and record the start, then begin the upstream connection at once. Raises
        when it cannot; a start already recorded then gets its end (never left live)."""
        await self.gw.services.sessions.started(self.record)
        try:
            self.recording = await self.gw.recorder.start(
                self.id,
                meta={
                    "user": self.user,
                    "target": self.target,
                    "account": self.account,
                    "upstream_account": self.upstream_account,
                    "grant": self.grant_id or "",
                    "client": self.client_addr,
                    "kind": "ssh",
                },
            )
        except Exception as exc:
            self._ended = True
            with contextlib.suppress(Exception):  # the refusal stands either way
                await self.gw.services.sessions.ended(
                    self.id, self.user, f"could not start: {exc}", 0, 0
                )
            raise
        self.recording.add_failure_callback(
            lambda exc: self.spawn(self.gw.registry.terminate(self.id, "recording failed"))
        )
        self.recording.add_pressure_callback(self._disk_pressure)
        self.recording.add_sftp_callback(self._sftp_op)
        self.gw.registry.add(self)
        self._upstream = asyncio.ensure_future(self._connect())

    async def _provision(self) -> None:
        """Make the grant's account (or elevation) on the target, once a channel is
        authorized: a refused session makes nothing."""
        await asyncio.shield(self._authorized)
        if self.target_obj.provision == "none" or self._provisioned:
            return
        try:
            self.upstream_account = await self.gw.services.provisioner.session_account(
                self.user, self.target_obj, self.account, self.grant_id
            )
        except ProvisionRefused as exc:
            raise UpstreamError(str(exc)) from None
        self._provisioned = True
        self.mark("provision", f"logged in on {self.target} as {self.upstream_account}")

    async def _credential(self) -> UpstreamCredential:
        await self._provision()
        valid_until = self.expires_at or self.gw.services.policy.now()
        return await completed(
            self.gw.services.credentials.ssh(
                self.target_obj, self.upstream_account, self.id, self.user, valid_until
            )
        )

    async def _connect(self) -> asyncssh.SSHClientConnection:
        # completed(): a cancel (the session ending) must not cut a database call short.
        if self.target_obj.provision == "ephemeral":
            # The account does not exist before it is made, and sshd looks the user up at
            # the first authentication request: no early connection here.
            await self._provision()
            kind: str | None = "private_key"  # the grant's own key, made with the account
        else:
            vault = self.gw.services.vault
            kind = await completed(vault.credential_kind(self.target, self.account))
        started = time.monotonic()
        conn = await connect_upstream(
            self.target_obj, self.upstream_account, kind, self._credential
        )
        self.gw.metrics.upstream_connect.observe(time.monotonic() - started)
        return conn

    async def _audit_upstream_failure(self, exc: UpstreamError) -> None:
        """Once per session: the first channel that meets the failure reports it (a refused
        session's early connection is never news)."""
        if self._upstream_audited:
            return
        self._upstream_audited = True
        self.ended_because(end_reason(exc))
        await self.gw.services.audit.record_or_owe(
            actor=self.user,
            action="upstream.failure",
            subject=self.id,
            details={
                "target": self.target,
                "account": self.account,
                "reason": end_reason(exc),
                "detail": str(exc),
            },
        )

    def ended_because(self, reason: str) -> None:
        if self.end_reason is None:
            self.end_reason = reason

    def channel_refused(self, reason: str) -> None:
        """A session none of whose channels was ever bridged ends because of its refusals
        (the last one), not "client disconnected" when the client then leaves."""
        self._refusal = f"channel refused: {reason}"

    def why_ended(self) -> str:
        """The end reason when the client's connection is gone."""
        if self.end_reason is not None:
            return self.end_reason
        if not self.bridged and self._refusal is not None:
            return self._refusal
        return "client disconnected"

    async def upstream(self) -> asyncssh.SSHClientConnection:
        """The authenticated upstream. An early connection that the target dropped while it
        waited for the first authorized channel is made again, once."""
        assert self._upstream is not None
        if not self._authorized.done():
            self._authorized.set_result(None)
        try:
            return await asyncio.shield(self._upstream)
        except UpstreamUnreachable as exc:
            if self._ended or self._reconnected:
                await self._audit_upstream_failure(exc)
                raise
        except UpstreamError as exc:
            await self._audit_upstream_failure(exc)
            raise
        self._reconnected = True
        self._upstream = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._upstream)
        except UpstreamError as exc:
            await self._audit_upstream_failure(exc)
            raise

    def describe_upstream_error(self, exc: BaseException) -> str:
        if isinstance(exc, UpstreamError):
            return str(exc)
        return f"the target {self.target} could not be reached ({type(exc).__name__})"

    async def authorize_channel(self, kind: str, command: str | None) -> str | None:
        """None if the channel may open, else the one-line reason. Fails closed: if the
        decision cannot be made (the database is unavailable or busy), the channel is refused."""
        try:
            async with self.gw.admission:
                auth = await self.gw.services.access.authorize(
                    self.user,
                    self.target,
                    self.account,
                    kind,  # type: ignore[arg-type]
                )
        except Exception:
            log.exception("session %s: checking a %s channel failed", self.id, kind)
            return "the gateway could not check this channel's access right now; try again"
        if not auth.decision.allowed:
            await self._refused("channel.refused", str(auth.decision.message), kind=kind)
            return str(auth.decision.message)
        if command is not None:
            if self.recording is not None:
                self.recording.exec_command(command)
            return await self._check_command(command)
        return None

    async def authorize_forward(self, host: str, port: int) -> tuple[str | None, str]:
        """(None, the normalised destination) if ``-L`` to ``host:port`` may open, else the
        one-line reason. Fails closed like ``authorize_channel``."""
        try:
            async with self.gw.admission:
                decision = await self.gw.services.access.authorize_forward(
                    self.user, self.target, self.account, host, port
                )
        except Exception:
            log.exception("session %s: checking a forward failed", self.id)
            return "the gateway could not check this forward right now; try again", host
        if not decision.allowed:
            await self._refused(
                "forward.refused", decision.message, destination=f"{decision.destination}:{port}"
            )
            return decision.message, decision.destination
        return None, decision.destination

    async def _refused(self, action: str, reason: str, **details: str) -> None:
        await self.gw.services.refusals.refused(
            actor=self.user,
            action=action,
            subject=self.id,
            reason=reason,
            client=self.client_addr,
            details={"target": self.target, "account": self.account, **details},
        )

    async def _check_command(self, command: str) -> str | None:
        for hit in self.gw.anomaly.check_command(command):
            await self._act(hit)
            if hit.action != "alert":
                return f"command refused by rule {hit.rule}"
        return None

    def check_shell_line(self, line: str) -> str | None:
        """The rule that blocks this line at Enter, if any; kill rules end the session."""
        for hit in self.gw.anomaly.check_command(line):
            self.spawn(self._act(hit))
            if hit.action != "alert":
                return hit.rule
        return None

    def _disk_pressure(self, behind: bool) -> None:
        # Nothing may go unrecorded, and the queue for the disk is bounded: while the disk is
        # behind, the target is not read (its SSH window then stops it).
        self.disk_behind = behind
        for channel in self.channels:
            channel.hold("recording", behind)

    def _sftp_op(self, op: Mapping[str, Any]) -> None:
        self._sftp_ops.append(dict(op))
        if self._sftp_audit is None or self._sftp_audit.done():
            self._sftp_audit = asyncio.ensure_future(self._audit_sftp())

    async def _audit_sftp(self) -> None:
        """Write the SFTP operations to the audit log off the data path, a batch per
        transaction; if the audit log cannot be written, the session ends."""
        while self._sftp_ops:
            batch, self._sftp_ops = self._sftp_ops, []
            try:
                await completed(
                    self.gw.services.sessions.operations(self.record, batch, prefix="sftp")
                )
            except Exception:
                log.exception("session %s: auditing SFTP operations failed", self.id)
                self.spawn(self.gw.registry.terminate(self.id, "the audit log is unavailable"))
                return

    def output_watcher(self) -> OutputWatcher | None:
        """A watcher for one channel's output, or None when no rule looks at output."""
        return OutputWatcher(self.gw.anomaly) if self.gw.anomaly.outputs else None

    def observe_output(self, watcher: OutputWatcher, data: bytes) -> None:
        for hit in watcher.feed(data):
            self.spawn(self._act(hit))

    async def _act(self, hit: AnomalyHit) -> None:
        await self.gw.enforcer.anomaly(self, hit)

    def mark(self, kind: str, text: str) -> None:
        if self.recording is not None:
            self.recording.marker(kind, text)

    def notify(self, line: str) -> None:
        if self.recording is not None:
            with contextlib.suppress(Exception):
                self.recording.marker("warning", line)
        for channel in self.channels:
            channel.notify(line)

    def channel_closed(self, channel: ClientChannel) -> None:
        if channel in self.channels:
            self.channels.remove(channel)
        if not self.channels and not self._ended:
            self.spawn(self._end_quietly())

    async def _end_quietly(self) -> None:
        await asyncio.sleep(0.2)  # a client may open its next channel right away
        if not self.channels and not self._ended:
            self.conn.close()

    async def close(self, reason: str) -> None:
        """Terminate: tell the person why, close both legs, seal, record the end."""
        if self._ended:
            await self.finish(reason)  # the end under way
            return
        line = f"[lockgate] session terminated: {reason}"
        if self.recording is not None:
            with contextlib.suppress(Exception):
                self.recording.marker("kill", reason)
        for channel in list(self.channels):
            channel.notify(line)
            if channel.chan is not None:
                channel.chan.exit(1)
        await self.finish(reason)

    async def finish(self, reason: str) -> None:
        """The one end: every caller (the client leaving, a kill, shutdown) waits for the
        same one, so a stopping node waits for ends already under way."""
        if self._finishing is None:
            self._finishing = asyncio.ensure_future(self._finish(reason))
        await asyncio.shield(self._finishing)

    async def _finish(self, reason: str) -> None:
        self._ended = True
        if self._upstream is not None:
            upstream = self._upstream
            if not upstream.done():
                upstream.cancel()
            elif not upstream.cancelled() and upstream.exception() is None:
                upstream.result().close()
        # Let the exit status and the termination line reach the client before disconnecting.
        waits = [c.chan.wait_closed() for c in self.channels if c.chan is not None]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 2.0)
        self.conn.close()
        if self.recording is not None:
            with contextlib.suppress(Exception):
                await self.recording.close(reason)
        while self._sftp_audit is not None and not self._sftp_audit.done():
            await asyncio.shield(self._sftp_audit)  # files still open at the end included
        metrics = self.gw.metrics
        metrics.sessions_total.labels(kill_reason(reason)).inc()
        metrics.bytes_total.labels("up").inc(self.bytes_up)
        metrics.bytes_total.labels("down").inc(self.bytes_down)
        try:
            await self.gw.services.sessions.ended(
                self.id, self.user, reason, self.bytes_up, self.bytes_down
            )
        except Exception:
            log.exception("recording the end of session %s failed", self.id)
        # Only a sealed session whose end is written (or owed) leaves the registry: "not
        # live" means "recording complete", and a stopping node waits for what is live.
        self.gw.registry.discard(self)
