"""The asyncssh callback class: each callback turns a protocol event into a question for the
core (``gateway.access``) and its answer into a protocol reply. Each override states its
security decision; no decision is taken here that the core does not make.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncssh

from gateway.access import Factor, Where, factors_suffice
from gateway.db import completed
from gateway.errors import LoginBusy, LoginError
from gateway.oidc.device import DeviceLogin
from gateway.ssh import terrapin
from gateway.ssh.bridge import ClientChannel
from gateway.ssh.forward import open_forward
from gateway.ssh.login import Login, login_help, parse_login
from gateway.ssh.session import LiveSshSession
from gateway.ssh.shell import ShellChannel, ShellContext
from policy.models import User

if TYPE_CHECKING:
    from gateway.ssh.listener import SshGateway

log = logging.getLogger(__name__)
DEVICE_WAIT = 300.0  # seconds an SSH login waits for its approval in the browser


class GatewayConnection(asyncssh.SSHServer):
    """One client connection. Identity is taken from the user name of the attempt that
    succeeded, so switching names between attempts never mixes states; failures are
    throttled per (user, address) with per-user and per-address ceilings
    (``gateway.throttle``), and answered alike for unknown users. Only password checks are
    throttled: key logins never wait behind them or get blocked by their failures."""

    def __init__(self, gw: SshGateway) -> None:
        self.gw = gw
        self.access = gw.services.access
        self.conn: asyncssh.SSHServerConnection | None = None
        self.addr = "?"
        self.login: Login | None = None
        self.refusal: str | None = None
        self.live: LiveSshSession | None = None
        self.prepared: asyncio.Task[None] | None = None
        self.gone = False
        self.starting = False  # counted among the unauthenticated connections
        self._told_unavailable = False
        self._password_ok = False  # a password was verified (its throttle pair is cleared)
        self._kbd: dict[str, User] = {}  # user name -> password verified, code pending
        self._device: dict[str, DeviceLogin] = {}  # user name -> device login shown

    # --- connection ----------------------------------------------------------------
    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        """Beyond ``limits.ssh_max_startups`` unauthenticated connections (a quarter of them
        per address) a new one is closed before its key exchange, as OpenSSH's MaxStartups.
        A client without strict KEX gets only Terrapin-safe algorithms (``terrapin``)."""
        self.conn = conn
        peer = conn.get_extra_info("peername")
        claimed = self.gw.client_of((str(peer[0]), int(peer[1])) if peer else None)
        self.addr = claimed or (str(peer[0]) if peer else "?")
        terrapin.guard(conn, require_strict=self.gw.services.config.server.require_strict_kex)
        if self.gw.admit(self.addr):
            self.starting = True
        else:
            log.info("SSH connection from %s refused: too many unauthenticated", self.addr)
            asyncio.get_running_loop().call_soon(conn.abort)

    def _started(self) -> None:
        if self.starting:
            self.starting = False
            self.gw.startup_done(self.addr)

    def connection_lost(self, exc: BaseException | None) -> None:
        """The grant check is not cancelled (a cancel in the middle of a database call can
        leave SQLite locked); ``_prepare`` sees the flag and ends what it opened."""
        self._started()
        self.gone = True
        for device in self._device.values():  # a device login waiting for a client that left
            device.done.set()  # its waiter then marks it cancelled
        if self.live is not None:
            self.live.spawn(self.live.finish(self.live.why_ended()))

    def _parse(self, username: str) -> Login | None:
        try:
            return parse_login(username)
        except LoginError:
            return None

    def _keys(self, login: Login | None, username: str) -> tuple[str, ...]:
        return self.gw.throttle.login_keys(login.user if login else username[:64], self.addr)

    async def _blocked(self, login: Login | None, username: str) -> bool:
        """Locked out, or not known to be free: a throttle that cannot be read refuses."""
        if login is None:
            return True
        try:
            return await completed(self.gw.throttle.blocked(*self._keys(login, username)))
        except Exception:
            await self._unavailable(username)
            return True

    async def _failed(self, username: str, method: str, *, throttled: bool = True) -> bool:
        login = self._parse(username)
        if throttled:
            with contextlib.suppress(Exception):  # unreachable: blocked() refuses meanwhile
                await completed(self.gw.throttle.failed(*self._keys(login, username)))
        self.gw.metrics.auth_failures.labels(method).inc()
        with contextlib.suppress(Exception):
            await completed(  # not cut short by a client that leaves meanwhile
                self.gw.services.audit.record(
                    actor=login.user if login else "?",
                    action="auth.failure",
                    subject=username[:64],
                    details={"method": method, "client": self.addr},
                )
            )
        return False

    async def _unavailable(self, username: str) -> bool:
        """The login cannot be checked (the database is unreachable): refused, with the
        one-line reason in the SSH banner (OpenSSH prints it on stderr), and audited once
        per connection (owed until the database is back)."""
        log.warning("SSH login from %s refused: the database is unavailable", self.addr)
        if self.conn is not None and not self._told_unavailable:
            self._told_unavailable = True
            with contextlib.suppress(Exception):
                self.conn.send_auth_banner(
                    "lockgate: the gateway cannot reach its database right now; "
                    "try again in a minute\r\n"
                )
            login = self._parse(username)
            await self.gw.services.refusals.refused(
                actor=login.user if login else username,
                action="auth.refused",
                subject=username[:64],
                reason="the gateway cannot reach its database",
                client=self.addr,
                details={"code": "database_unavailable", "via": "ssh"},
            )
        return False

    def _busy(self) -> bool:
        """The password could not be checked now (too many checks waiting): refused, but not
        counted as a failure of this person."""
        self.gw.metrics.auth_failures.labels("busy").inc()
        return False

    async def _suffice(
        self, login: Login, user: User, presented: set[Factor], idp: frozenset[str] = frozenset()
    ) -> bool:
        """Whether the factors sign in; ``idp``: the amr/acr of a device login's IdP sign-in,
        a second factor where the rule's ``idp_mfa`` names one of them."""
        mfa, accepted = False, frozenset[str]()
        if login.target is not None:
            mfa, accepted = await self.access.session_mfa(login.user, login.target, login.account)
        if Factor.IDP in presented and idp & accepted:
            presented = {*presented, Factor.IDP_MFA}
        return factors_suffice(user, presented, Where.SSH, mfa_per_session=mfa)

    # --- authentication -------------------------------------------------------------
    def begin_auth(self, username: str) -> bool:
        """Authentication is always required: there is no anonymous access. A name that is
        not a Lockgate login (every attempt with it fails) is answered with the grammar, in
        a banner the client shows before it gives up."""
        if self.conn is not None and self._parse(username) is None:
            self.conn.send_auth_banner(login_help(username) + "\r\n")
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """A key registered to the user. Called for the key query and again for the signed
        request; asyncssh completes authentication only once the signature over the session
        id has verified. Under a per-session MFA rule a key is not enough: refused here, the
        client moves on to keyboard-interactive, which asks for a password and a fresh code.
        The password throttle is neither consulted nor fed: offering keys costs no hashing
        and cannot guess anything, and password failures must never lock a key out."""
        login = self._parse(username)
        if login is None:
            return await self._failed(username, "publickey", throttled=False)
        try:
            user = await self.access.key_user(login.user, key)
        except Exception:
            return await self._unavailable(username)
        if user is not None:
            return await self._suffice(login, user, {Factor.KEY})
        return await self._failed(username, "publickey", throttled=False)

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        """Plain password auth signs in only a user who needs no second factor (no TOTP
        enrolled, no MFA rule); everyone else goes through keyboard-interactive."""
        login = self._parse(username)
        if login is None or await self._blocked(login, username):
            return await self._failed(username, "password")
        try:
            user = await self.access.password_user(login.user, password)
        except LoginBusy:
            return self._busy()
        except Exception:
            return await self._unavailable(username)
        if user is not None and await self._suffice(login, user, {Factor.PASSWORD}):
            self._password_ok = True
            return True
        return await self._failed(username, "password")

    def kbdint_auth_supported(self) -> bool:
        return True

    async def get_kbdint_challenge(self, username: str, lang: str, submethods: str) -> Any:
        """A password prompt; for a user linked to an identity provider, the device login's
        link: with no prompt (the client answers at once and the login waits for the
        browser, see ``validate_kbdint_response``), or, for one who also has a password
        (a break-glass admin), with a password prompt that an empty answer skips."""
        self._kbd.pop(username, None)
        login = self._parse(username)
        devices = self.gw.devices
        user = None
        if login is not None and devices is not None and not await self._blocked(login, username):
            user = await completed(self.access.idp_user(login.user))
        if user is None or devices is None:
            return "", "", "", [("Password: ", False)]
        device = await completed(devices.start(user.name, self.addr))
        self._device[username] = device
        self._hold_login(DEVICE_WAIT)
        text = (
            f"Sign in with your identity provider to continue: {self.gw.device_url}"
            f"{device.code}\r\n(the link works once, for {int(DEVICE_WAIT)} seconds)\r\n"
        )
        if user.has_password:
            return "", text, "", [("Password (empty: wait for the browser): ", False)]
        return "", text, "", []

    def _hold_login(self, seconds: float) -> None:
        """Give a device login its time: the login timer (60 s) is set again for it. This
        reaches into asyncssh (pinned, like ``gateway.ssh.fastpath``)."""
        conn = self.conn
        if conn is None or getattr(conn, "_login_timer", None) is None:
            return
        conn._cancel_login_timer()
        loop = asyncio.get_running_loop()
        conn._login_timer = loop.call_later(seconds, conn._login_timer_callback)

    async def _device_login(self, username: str, login: Login, device: DeviceLogin) -> bool:
        devices = self.gw.devices
        assert devices is not None
        self._device[username] = device  # until decided: connection_lost cancels it
        try:
            approved = await devices.wait(device, DEVICE_WAIT)
        finally:
            self._device.pop(username, None)
            await completed(devices.cancel(device))
        if not approved:
            return await self._failed(username, "device")
        try:
            user = await completed(self.gw.services.policy.get_user(login.user))
        except Exception:
            return await self._failed(username, "device")
        if await completed(self._suffice(login, user, {Factor.IDP}, device.methods)):
            return True
        return await self._failed(username, "device-mfa")

    async def validate_kbdint_response(self, username: str, responses: Sequence[str]) -> Any:
        """First the password, then — when the user has TOTP — the code (echo off). A rule
        demanding MFA refuses a user without TOTP enrolled: the code cannot be asked."""
        login = self._parse(username)
        device = self._device.pop(username, None)
        if device is not None and login is not None:
            if not responses or responses == [""]:
                return await self._device_login(username, login, device)
            assert self.gw.devices is not None
            await completed(self.gw.devices.cancel(device))  # a password instead
        if login is None or len(responses) != 1 or await self._blocked(login, username):
            return await self._failed(username, "keyboard-interactive")
        user = self._kbd.pop(username, None)
        if user is None:
            try:
                user = await self.access.password_user(login.user, responses[0])
            except LoginBusy:
                return self._busy()
            except Exception:
                return await self._unavailable(username)
            if user is None:
                return await self._failed(username, "keyboard-interactive")
            if await self._suffice(login, user, {Factor.PASSWORD}):
                self._password_ok = True
                return True
            if not user.totp_enabled:
                return await self._failed(username, "totp-not-enrolled")
            self._kbd[username] = user
            return "", "", "", [("Verification code: ", False)]
        if await self.access.totp_ok(login.user, responses[0]) and await self._suffice(
            login, user, {Factor.PASSWORD, Factor.TOTP}
        ):
            self._password_ok = True
            return True
        return await self._failed(username, "totp")

    async def auth_completed(self) -> None:
        """For a target login, the grant check starts now, while the client sets up its
        channel; the target is contacted only once it passed."""
        assert self.conn is not None
        self._started()
        username = self.conn.get_extra_info("username")
        self.login = parse_login(username)
        if not self.login.is_shell:
            self.prepared = asyncio.ensure_future(self._prepare(self.login))
        if self._password_ok:  # after the grant check is under way: channels wait for it
            with contextlib.suppress(Exception):
                await completed(self.gw.throttle.succeeded(*self._keys(self.login, username)))

    async def _prepare(self, login: Login) -> None:
        """The grant check; when it passes, the session opens and the upstream connects
        while the client is still setting up its channel."""
        assert self.conn is not None and login.target is not None
        try:
            async with self.gw.admission:
                auth = await self.access.authorize(
                    login.user, login.target, login.account, None, auto_request=True
                )
                if not auth.decision.allowed or auth.target is None or auth.account is None:
                    self.refusal = str(auth.decision.message)
                    await self.gw.services.refusals.refused(
                        actor=login.user,
                        action="session.refused",
                        subject=f"{login.account or ''}@{login.target}",
                        reason=self.refusal,
                        client=self.addr,
                        details={"code": str(auth.decision.reason), "via": "ssh"},
                    )
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
    def _channel_slot(self) -> None:
        """Refuse a channel beyond ``limits.ssh_max_channels`` open on this connection (as
        OpenSSH's MaxSessions; forwards count too)."""
        cap = self.gw.services.config.limits.ssh_max_channels
        # asyncssh keeps the connection's open channels here; the one being opened (these
        # callbacks are coroutines, run once asyncssh made the channel) is among them.
        open_now = len(getattr(self.conn, "_channels", {}))
        if cap and open_now > cap:
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_RESOURCE_SHORTAGE, f"at most {cap} channels per connection"
            )

    async def session_requested(self) -> Any:
        """The gateway shell for a plain ``USER`` login; for a target login a bridged
        channel only once the grant check passed (each channel is authorized again when it
        says what it is), else a channel that prints the one-line refusal and exits 1."""
        assert self.login is not None
        self._channel_slot()
        if self.login.is_shell:
            gw = self.gw
            context = ShellContext(
                self.login.user,
                gw.services.policy,
                gw.gateway_host,
                gw.gateway_port,
                refusals=gw.services.refusals,
                client=self.addr,
            )
            return ShellChannel(context)
        if self.prepared is not None:
            await self.prepared
        if self.live is None:
            return _RefusedChannel(self.refusal or "access refused")
        channel = ClientChannel(self.live)
        self.live.channels.append(channel)
        return channel

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        """Remote forwarding is never allowed."""
        return False

    async def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Any:
        """Local forwarding (``-L``, ``-W``): only after the grant check, and only where the
        rule allows ``port_forward`` to that destination (``gateway.ssh.forward``)."""
        self._channel_slot()
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
