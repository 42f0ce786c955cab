"""Upstream credentials: what the gateway presents to a target on the person's behalf.

The vault's checkout is the only way a secret leaves it; this module turns what it returns
into what a protocol leg needs (an SSH password, key or per-session certificate; an HTTP
header) and is called only once a session or channel has been authorized. The person never
sees any of it, and no ``repr`` shows a secret.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from gateway.errors import UpstreamRefused
from policy.models import Target
from vault.errors import VaultError
from vault.secret import Secret
from vault.service import VaultService

if TYPE_CHECKING:
    import asyncssh


@dataclass(frozen=True)
class UpstreamCredential:
    """What the gateway presents to an SSH target. ``repr`` shows no secret."""

    username: str
    password: Secret | None = None
    key: asyncssh.SSHKey | None = None
    certificate: asyncssh.SSHCertificate | None = None

    def __repr__(self) -> str:
        kind = "certificate" if self.certificate else "key" if self.key else "password"
        return f"UpstreamCredential(username={self.username!r}, kind={kind})"


@dataclass(frozen=True)
class HttpCredential:
    """One header the gateway adds to every upstream request of a web session."""

    header: str
    value: Secret

    def __repr__(self) -> str:
        return f"HttpCredential(header={self.header!r}, value=***)"


class Credentials:
    def __init__(self, vault: VaultService) -> None:
        self.vault = vault

    async def ssh(
        self, target: Target, account: str, session_id: str, user: str, valid_until: datetime
    ) -> UpstreamCredential:
        """Check out (audited) or mint the credential for one SSH session. A ``ssh_ca``
        credential yields a fresh key and a certificate (principal = account, key id =
        session id) valid until the grant ends: no standing credential exists."""
        import asyncssh  # not at the top: every `lockgate` command imports this module

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
            raise _no_credential(target, account, exc) from None
        if out.kind == "password":
            return UpstreamCredential(account, password=out.secret)
        if out.kind == "private_key":
            return UpstreamCredential(account, key=asyncssh.import_private_key(out.secret.reveal()))
        raise UpstreamRefused(f"the credential for {account}@{target.name} is not for SSH")

    async def http(
        self, target: Target, account: str, session_id: str, user: str
    ) -> HttpCredential:
        """Check out (audited) the header a web session sends upstream: ``http_basic``
        becomes ``Authorization: Basic``, ``http_header`` the named header."""
        try:
            out = await self.vault.checkout(target.name, account, session_id, actor=user)
        except VaultError as exc:
            raise _no_credential(target, account, exc) from None
        if out.kind == "http_header" and out.public.get("header"):
            return HttpCredential(str(out.public["header"]), out.secret)
        if out.kind == "http_basic" and out.public.get("username"):
            pair = str(out.public["username"]).encode() + b":" + out.secret.reveal()
            return HttpCredential("Authorization", Secret(b"Basic " + base64.b64encode(pair)))
        raise UpstreamRefused(f"the credential for {account}@{target.name} is not for HTTP")


def _no_credential(target: Target, account: str, exc: VaultError) -> UpstreamRefused:
    return UpstreamRefused(
        f"no usable credential for {account}@{target.name} ({type(exc).__name__})"
    )
