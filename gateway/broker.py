"""What the SSH edge asks of the rest of Lockgate, answered by the real services.

The protocol code calls these methods and turns their answers into protocol messages; every
decision (who is who, what is allowed, which credential) is made here or below.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncssh
import sqlalchemy as sa

from gateway.audit import AuditLog
from gateway.services import Services
from gateway.sessions import SessionHandle
from gateway.tables import sessions
from policy.errors import PolicyError
from policy.models import ChannelKind, Target
from policy.rules import match_rule
from policy.service import SYSTEM_ACTOR, SessionAuthorization
from vault.errors import VaultError
from vault.secret import Secret


class UpstreamRefused(Exception):
    """No usable credential or pinned host key for the target. ``str()`` is safe to show."""


@dataclass(frozen=True)
class UpstreamCredential:
    """What the gateway presents upstream. ``repr`` shows no secret."""

    username: str
    password: Secret | None = None
    key: asyncssh.SSHKey | None = None
    certificate: asyncssh.SSHCertificate | None = None

    def __repr__(self) -> str:
        kind = "certificate" if self.certificate else "key" if self.key else "password"
        return f"UpstreamCredential(username={self.username!r}, kind={kind})"


def new_session_id() -> str:
    return f"se-{secrets.token_hex(8)}"


class Broker:
    def __init__(self, services: Services, gateway_host: str, gateway_port: int) -> None:
        self.services = services
        self.policy = services.policy
        self.vault = services.vault
        self.audit: AuditLog = services.audit
        self.node = services.config.server.node_name
        self.gateway_host = gateway_host
        self.gateway_port = gateway_port
        self.policy.gateway_hint = f"ssh -p {gateway_port} {{user}}@{gateway_host}"

    def now(self) -> datetime:
        return self.policy.now()

    # --- authentication --------------------------------------------------------
    async def key_allowed(self, user: str, key: asyncssh.SSHKey) -> bool:
        line = key.export_public_key().decode()
        return await self.policy.user_for_key(user, line) is not None

    async def password_ok(self, user: str, password: str) -> tuple[bool, bool]:
        """(password correct, user has TOTP)."""
        person = await self.policy.verify_password(user, password)
        return person is not None, bool(person and person.totp_enabled)

    async def totp_ok(self, user: str, code: str) -> bool:
        try:
            return await self.vault.verify_totp(user, code, self.now())
        except VaultError:
            return False

    async def mfa_required(self, user: str, target: str, account: str | None) -> bool:
        """Whether the rule behind the user's grant demands a fresh TOTP for every session."""
        auth = await self.policy.authorize_session(user, target, account, None)
        return bool(auth.decision.allowed and auth.rule is not None and auth.rule.mfa_per_session)

    async def record(self, actor: str, action: str, subject: str, **details: object) -> None:
        await self.audit.record(actor=actor, action=action, subject=subject, details=details)

    # --- authorization ---------------------------------------------------------
    async def authorize(
        self,
        user: str,
        target: str,
        account: str | None,
        channel: ChannelKind | None,
        *,
        auto_request: bool = False,
    ) -> SessionAuthorization:
        """The policy decision; with ``auto_request`` a zero-approval rule that needs no
        reason creates the grant on connect."""
        auth = await self.policy.authorize_session(user, target, account, channel)
        if auth.decision.allowed or auth.decision.reason != "no_grant" or not auto_request:
            return auth
        if auth.user is None or auth.target is None or not auth.account:
            return auth
        rule = match_rule(self.policy.rules, auth.user.roles, auth.target, auth.account)
        if rule is None or rule.approvals or rule.require_reason or rule.ticket_pattern:
            return auth
        try:
            await self.policy.create_request(user, target, account=auth.account)
        except PolicyError:
            return auth
        return await self.policy.authorize_session(user, target, account, channel)

    async def recheck(self, session: SessionHandle) -> tuple[bool, str, datetime | None]:
        """Whether a live session may go on; if not, the reason shown to the person."""
        auth = await self.policy.authorize_session(
            session.user, session.target, session.account, None
        )
        if auth.decision.allowed and auth.grant is not None:
            return True, "", auth.grant.expires_at
        if auth.decision.reason == "no_grant" and session.grant_id:
            try:
                grant = await self.policy.get_grant(SYSTEM_ACTOR, session.grant_id)
            except PolicyError:
                return False, "grant no longer exists", None
            if grant.revoked_at is not None:
                return False, f"grant revoked by {grant.revoked_by}: {grant.revoke_reason}", None
            return False, "grant expired", None
        return False, str(auth.decision.message), None

    # --- upstream ----------------------------------------------------------------
    async def upstream_credential(
        self, target: Target, account: str, session_id: str, user: str, valid_until: datetime
    ) -> UpstreamCredential:
        try:
            if await self.vault.credential_kind(target.name, account) == "ssh_ca":
                key = asyncssh.generate_private_key("ssh-ed25519")
                cert = await self.vault.sign_user_certificate(
                    target.name,
                    account,
                    session_id,
                    user,
                    key.export_public_key().decode(),
                    valid_until,
                )
                return UpstreamCredential(
                    account, key=key, certificate=asyncssh.import_certificate(cert)
                )
            out = await self.vault.checkout(target.name, account, session_id, actor=user)
        except VaultError as exc:
            raise UpstreamRefused(
                f"no usable credential for {account}@{target.name} ({type(exc).__name__})"
            ) from None
        if out.kind == "password":
            return UpstreamCredential(account, password=out.secret)
        if out.kind == "private_key":
            return UpstreamCredential(account, key=asyncssh.import_private_key(out.secret.reveal()))
        raise UpstreamRefused(f"the credential for {account}@{target.name} is not for SSH")

    # --- session records ---------------------------------------------------------
    async def session_started(
        self,
        session_id: str,
        user: str,
        target: str,
        account: str,
        grant_id: str | None,
        client_addr: str,
    ) -> None:
        """Audited and recorded before the upstream is used; raising refuses the session."""
        async with self.services.maker() as db, db.begin():
            await self.audit.append(
                db,
                actor=user,
                action="session.start",
                subject=session_id,
                details={
                    "target": target,
                    "account": account,
                    "grant": grant_id,
                    "client": client_addr,
                    "node": self.node,
                },
            )
            await db.execute(
                sessions.insert().values(
                    id=session_id,
                    kind="ssh",
                    user=user,
                    target=target,
                    account=account,
                    grant_id=grant_id,
                    node=self.node,
                    client_addr=client_addr,
                    started_at=self.now(),
                    bytes_up=0,
                    bytes_down=0,
                )
            )

    async def sftp_operations(
        self, session_id: str, user: str, target: str, account: str, ops: list[dict[str, Any]]
    ) -> None:
        """Audit a session's SFTP operations (which file, which way, how many bytes), in
        order, in one transaction."""
        async with self.services.maker() as db, db.begin():
            for op in ops:
                await self.audit.append(
                    db,
                    actor=user,
                    action=f"sftp.{op.get('op', 'unknown')}",
                    subject=session_id,
                    details={"target": target, "account": account, **op},
                )

    async def session_ended(
        self, session_id: str, user: str, reason: str, bytes_up: int, bytes_down: int
    ) -> None:
        async with self.services.maker() as db, db.begin():
            await self.audit.append(
                db,
                actor=user,
                action="session.end",
                subject=session_id,
                details={"reason": reason, "bytes_up": bytes_up, "bytes_down": bytes_down},
            )
            await db.execute(
                sessions.update()
                .where(sessions.c.id == session_id)
                .values(
                    ended_at=self.now(),
                    end_reason=reason[:255],
                    bytes_up=bytes_up,
                    bytes_down=bytes_down,
                )
            )

    async def sweep_stale_sessions(self) -> int:
        """Sessions this node left live when it last stopped: mark them ended."""
        async with self.services.maker() as db, db.begin():
            result = await db.execute(
                sessions.update()
                .where(sessions.c.node == self.node, sessions.c.ended_at.is_(None))
                .values(ended_at=self.now(), end_reason="gateway restarted")
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def live_sessions_elsewhere(self) -> int:
        async with self.services.maker() as db:
            return int(
                (
                    await db.execute(
                        sa.select(sa.func.count())
                        .select_from(sessions)
                        .where(sessions.c.ended_at.is_(None), sessions.c.node != self.node)
                    )
                ).scalar_one()
            )
