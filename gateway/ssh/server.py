"""The SSH listener: asyncssh callbacks translated into broker calls.

Security decisions in the callbacks below:
- A public key authenticates only after asyncssh has verified the client's signature; a key
  query alone only answers "acceptable". Identity is taken from the user name of the
  attempt that succeeded, so switching names between attempts never mixes states.
- Passwords go through keyboard-interactive (password, then the TOTP code when the user has
  one); plain password auth is offered only to users without TOTP.
- Failures are throttled per user and per address and answered alike for unknown users.
- Agent forwarding, X11, remote forwarding are refused; local forwarding only where the
  rule allows it. The target is contacted only after the grant check passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncssh

from gateway.broker import Broker, UpstreamRefused, new_session_id
from gateway.db import completed
from gateway.metrics import Metrics, kill_reason
from gateway.sessions import SessionRegistry
from gateway.ssh import fastpath
from gateway.ssh.bridge import ClientChannel
from gateway.ssh.login import Login, LoginError, parse_login
from gateway.ssh.shell import ShellChannel
from gateway.ssh.throttle import Throttle
from gateway.ssh.upstream import UpstreamError, connect_upstream
from policy.models import Target
from recorder.anomaly import AnomalyEngine, AnomalyHit, OutputWatcher
from recorder.writer import Recorder, SessionRecording

log = logging.getLogger(__name__)

KEX = (
    # Post-quantum hybrid first (OpenSSH 9.9+ clients): a recorded session carries what a
    # future quantum computer must not be able to decrypt.
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256",
)
CIPHERS = (
    "chacha20-poly1305@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)
MACS = (
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
)


@dataclass
class SshGateway:
    """Everything the SSH edge needs, built once per process."""

    broker: Broker
    registry: SessionRegistry
    recorder: Recorder
    anomaly: AnomalyEngine
    throttle: Throttle
    host_keys: Sequence[asyncssh.SSHKey]
    metrics: Metrics = field(default_factory=Metrics)
    # Session set-ups that may touch the database at once. A burst of hundreds of sessions
    # starting together otherwise queues on SQLite's write lock, whose sleep-and-retry
    # waiting starves some of them past the busy timeout; the rest wait here, in order.
    admission: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(16))

    async def listen(self, host: str, port: int) -> asyncssh.SSHAcceptor:
        fastpath.install(self.broker.services.config.server.ssh_fastpath)
        return await asyncssh.listen(
            host,
            port,
            server_factory=lambda: GatewayConnection(self),
            server_host_keys=list(self.host_keys),
            kex_algs=list(KEX),
            encryption_algs=list(CIPHERS),
            mac_algs=list(MACS),
            agent_forwarding=False,
            x11_forwarding=False,
            allow_scp=False,
            encoding=None,
            line_editor=False,
            login_timeout=60,
            keepalive_interval=60,
            keepalive_count_max=3,
        )

    async def lock_user(self, user: str, reason: str) -> None:
        from policy.service import SYSTEM_ACTOR

        with contextlib.suppress(Exception):
            await self.broker.policy.lock(SYSTEM_ACTOR, "user", user, reason)


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
        self.id = new_session_id()
        self.user = login.user
        self.login = login
        self.target_obj = target
        self.target = target.name
        self.account = account
        self.grant_id = grant_id
        self.expires_at = expires_at
        self.client_addr = client_addr
        self.bytes_up = 0
        self.bytes_down = 0
        self.recording: SessionRecording | None = None
        self.channels: list[ClientChannel] = []
        self._upstream: asyncio.Future[asyncssh.SSHClientConnection] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sftp_ops: list[dict[str, Any]] = []
        self._sftp_audit: asyncio.Task[None] | None = None
        self._ended = False
        self.has_command_rules = bool(gw.anomaly.commands)
        self.disk_behind = False

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def open(self) -> None:
        """Audit and record the start, then begin the upstream connection at once."""
        await self.gw.broker.session_started(
            self.id, self.user, self.target, self.account, self.grant_id, self.client_addr
        )
        self.recording = await self.gw.recorder.start(
            self.id,
            meta={
                "user": self.user,
                "target": self.target,
                "account": self.account,
                "grant": self.grant_id or "",
                "client": self.client_addr,
                "kind": "ssh",
            },
        )
        self.recording.add_failure_callback(
            lambda exc: self.spawn(self.gw.registry.terminate(self.id, "recording failed"))
        )
        self.recording.add_pressure_callback(self._disk_pressure)
        self.recording.add_sftp_callback(self._sftp_op)
        self.gw.registry.add(self)
        self._upstream = asyncio.ensure_future(self._connect())

    async def _connect(self) -> asyncssh.SSHClientConnection:
        valid_until = self.expires_at or self.gw.broker.now()
        cred = await completed(
            self.gw.broker.upstream_credential(
                self.target_obj, self.account, self.id, self.user, valid_until
            )
        )
        started = time.monotonic()
        conn = await connect_upstream(self.target_obj, cred)
        self.gw.metrics.upstream_connect.observe(time.monotonic() - started)
        return conn

    async def upstream(self) -> asyncssh.SSHClientConnection:
        assert self._upstream is not None
        return await asyncio.shield(self._upstream)

    def describe_upstream_error(self, exc: BaseException) -> str:
        if isinstance(exc, UpstreamError | UpstreamRefused):
            return str(exc)
        return f"the target {self.target} could not be reached ({type(exc).__name__})"

    async def authorize_channel(self, kind: str, command: str | None) -> str | None:
        """None if the channel may open, else the one-line reason. Fails closed: if the
        decision cannot be made (the database is unavailable or busy), the channel is refused."""
        try:
            async with self.gw.admission:
                auth = await self.gw.broker.authorize(self.user, self.target, self.account, kind)  # type: ignore[arg-type]
        except Exception:
            log.exception("session %s: checking a %s channel failed", self.id, kind)
            return "the gateway could not check this channel's access right now; try again"
        if not auth.decision.allowed:
            return str(auth.decision.message)
        if command is not None:
            if self.recording is not None:
                self.recording.exec_command(command)
            return await self._check_command(command)
        return None

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
                    self.gw.broker.sftp_operations(
                        self.id, self.user, self.target, self.account, batch
                    )
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
        if self.recording is not None:
            with contextlib.suppress(Exception):
                self.recording.marker(
                    "alert"
                    if hit.action == "alert"
                    else "block"
                    if hit.action == "block"
                    else "kill",
                    f"rule {hit.rule}",
                )
        await self.gw.broker.record(
            self.user, "anomaly." + hit.action, self.id, rule=hit.rule, target=self.target
        )
        if hit.action in ("kill", "kill_and_lock"):
            if hit.action == "kill_and_lock":
                await self.gw.lock_user(self.user, f"anomaly rule {hit.rule}")
            await self.gw.registry.terminate(self.id, f"anomaly rule {hit.rule}")

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
        if self._ended:
            return
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
        # Only a sealed session leaves the registry: "not live" means "recording complete".
        self.gw.registry.discard(self)
        metrics = self.gw.metrics
        metrics.sessions_total.labels(kill_reason(reason)).inc()
        metrics.bytes_total.labels("up").inc(self.bytes_up)
        metrics.bytes_total.labels("down").inc(self.bytes_down)
        try:
            await self.gw.broker.session_ended(
                self.id, self.user, reason, self.bytes_up, self.bytes_down
            )
        except Exception:
            log.exception("recording the end of session %s failed", self.id)


class GatewayConnection(asyncssh.SSHServer):
    def __init__(self, gw: SshGateway) -> None:
        self.gw = gw
        self.conn: asyncssh.SSHServerConnection | None = None
        self.addr = "?"
        self.login: Login | None = None
        self.refusal: str | None = None
        self.live: LiveSshSession | None = None
        self.prepared: asyncio.Task[None] | None = None
        self.gone = False
        self._kbd: dict[str, int] = {}

    # --- connection ----------------------------------------------------------------
    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        self.addr = str(peer[0]) if peer else "?"

    def connection_lost(self, exc: BaseException | None) -> None:
        # The grant check is not cancelled (a cancel in the middle of a database call can
        # leave SQLite locked); _prepare sees the flag and ends what it opened.
        self.gone = True
        if self.live is not None:
            self.live.spawn(self.live.finish("client disconnected"))

    def _parse(self, username: str) -> Login | None:
        try:
            return parse_login(username)
        except LoginError:
            return None

    def _keys(self, login: Login | None, username: str) -> tuple[str, str]:
        return (f"user:{login.user if login else username}", f"addr:{self.addr}")

    async def _failed(self, username: str, method: str) -> bool:
        login = self._parse(username)
        self.gw.throttle.failed(*self._keys(login, username))
        self.gw.metrics.auth_failures.labels(method).inc()
        with contextlib.suppress(Exception):
            await self.gw.broker.record(
                login.user if login else "?",
                "auth.failure",
                username[:64],
                method=method,
                client=self.addr,
            )
        return False

    # --- authentication -------------------------------------------------------------
    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        # Called for the key query and again for the signed request; asyncssh completes
        # authentication only once the signature over the session id has verified.
        login = self._parse(username)
        if login is None or self.gw.throttle.blocked(*self._keys(login, username)):
            return await self._failed(username, "publickey")
        if await self.gw.broker.key_allowed(login.user, key):
            # Per-session MFA: a key is not enough; the client moves on to
            # keyboard-interactive, where a fresh TOTP code is asked for.
            return not await self._needs_mfa(login)
        return await self._failed(username, "publickey")

    async def _needs_mfa(self, login: Login) -> bool:
        if login.target is None:
            return False
        return await self.gw.broker.mfa_required(login.user, login.target, login.account)

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        login = self._parse(username)
        if login is None or self.gw.throttle.blocked(*self._keys(login, username)):
            return await self._failed(username, "password")
        ok, has_totp = await self.gw.broker.password_ok(login.user, password)
        if ok and not has_totp and not await self._needs_mfa(login):
            return True
        return await self._failed(username, "password")

    def kbdint_auth_supported(self) -> bool:
        return True

    def get_kbdint_challenge(self, username: str, lang: str, submethods: str) -> Any:
        self._kbd[username] = 0
        return "", "", "", [("Password: ", False)]

    async def validate_kbdint_response(self, username: str, responses: Sequence[str]) -> Any:
        login = self._parse(username)
        stage = self._kbd.get(username, 0)
        if (
            login is None
            or len(responses) != 1
            or self.gw.throttle.blocked(*self._keys(login, username))
        ):
            return await self._failed(username, "keyboard-interactive")
        if stage == 0:
            ok, has_totp = await self.gw.broker.password_ok(login.user, responses[0])
            if not ok:
                return await self._failed(username, "keyboard-interactive")
            if not has_totp:
                if await self._needs_mfa(login):  # the rule demands a code it cannot get
                    return await self._failed(username, "totp-not-enrolled")
                return True
            self._kbd[username] = 1
            return "", "", "", [("Verification code: ", True)]
        if await self.gw.broker.totp_ok(login.user, responses[0]):
            return True
        return await self._failed(username, "totp")

    async def auth_completed(self) -> None:
        assert self.conn is not None
        username = self.conn.get_extra_info("username")
        self.login = parse_login(username)
        self.gw.throttle.succeeded(*self._keys(self.login, username))
        if not self.login.is_shell:
            self.prepared = asyncio.ensure_future(self._prepare(self.login))

    async def _prepare(self, login: Login) -> None:
        """The grant check; when it passes, the session opens and the upstream connects
        while the client is still setting up its channel."""
        assert self.conn is not None and login.target is not None
        try:
            async with self.gw.admission:
                auth = await self.gw.broker.authorize(
                    login.user, login.target, login.account, None, auto_request=True
                )
                if not auth.decision.allowed or auth.target is None or auth.account is None:
                    self.refusal = str(auth.decision.message)
                    return
                live = LiveSshSession(
                    self.gw,
                    self.conn,
                    login,
                    auth.target,
                    auth.account,
                    auth.grant.id if auth.grant else None,
                    auth.grant.expires_at if auth.grant else None,
                    self.addr,
                )
                await live.open()
            self.live = live
            if self.gone:
                await live.finish("client disconnected")
        except Exception:
            log.exception("opening a session for %s failed", login.user)
            self.refusal = "the session could not be opened (audit or recording unavailable)"

    # --- channels -------------------------------------------------------------------
    async def session_requested(self) -> Any:
        assert self.login is not None
        if self.login.is_shell:
            return ShellChannel(self.gw.broker, self.login.user)
        if self.prepared is not None:
            await self.prepared
        if self.live is None:
            return _RefusedChannel(self.refusal or "access refused")
        channel = ClientChannel(self.live)
        self.live.channels.append(channel)
        return channel

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False  # remote forwarding is never allowed

    async def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Any:
        from gateway.ssh.forward import open_forward

        if self.prepared is not None:
            await self.prepared
        if self.live is None:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, self.refusal or "access refused"
            )
        return await open_forward(self.live, dest_host, dest_port)


class _RefusedChannel(asyncssh.SSHServerSession[bytes]):
    """A channel that says why the session was refused and exits non-zero."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.chan: asyncssh.SSHServerChannel[bytes] | None = None

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self.chan = chan

    def pty_requested(self, *args: Any) -> bool:
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        return True

    def session_started(self) -> None:
        assert self.chan is not None
        self.chan.write_stderr(f"lockgate: {self.message}\r\n".encode())
        self.chan.exit(1)
