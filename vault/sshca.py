"""A per-target SSH certificate authority: short-lived user certificates, one per session."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncssh

from vault.errors import InvalidInput

CLOCK_SKEW = timedelta(seconds=60)


def generate_ca() -> tuple[bytes, str]:
    """A new Ed25519 CA: (private key in OpenSSH format, public key line)."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment="lockgate-ca")
    return key.export_private_key(), key.export_public_key().decode().strip()


def sign_user_key(
    ca_private: bytes,
    user_public_key: str,
    *,
    principal: str,
    key_id: str,
    now: datetime,
    valid_until: datetime,
) -> str:
    """An OpenSSH user certificate for ``principal`` valid from ``now`` (less clock skew) to
    ``valid_until``. It permits a pty and port forwarding (the gateway decides what to use)
    and nothing the gateway never uses: no agent or X11 forwarding, no user rc."""
    if valid_until <= now:
        raise InvalidInput("a certificate must end in the future")
    try:
        user_key = asyncssh.import_public_key(user_public_key)
    except (asyncssh.KeyImportError, ValueError):
        raise InvalidInput("not an OpenSSH public key") from None
    ca = asyncssh.import_private_key(ca_private)
    cert = ca.generate_user_certificate(
        user_key,
        key_id,
        principals=[principal],
        valid_after=int((now - CLOCK_SKEW).timestamp()),
        valid_before=int(valid_until.timestamp()),
        permit_x11_forwarding=False,
        permit_agent_forwarding=False,
        permit_port_forwarding=True,
        permit_pty=True,
        permit_user_rc=False,
    )
    return cert.export_certificate().decode().strip()
