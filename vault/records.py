"""What the vault says about a credential and hands out, and how its rows read."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from vault import crypto
from vault.errors import InvalidInput
from vault.secret import Secret

CredentialKind = Literal[
    "password",
    "private_key",
    "ssh_ca",
    "http_basic",
    "http_header",
    "totp_seed",
    "provisioner",
    "oidc_client_secret",
    "oidc_refresh_token",
]


@dataclass(frozen=True)
class CredentialInfo:
    """What may be shown about a credential: never the secret."""

    id: str
    target: str  # for totp_seed: "user:<name>"
    account: str
    kind: CredentialKind
    key_id: str  # master key that wraps its data key
    created_at: datetime
    created_by: str
    public: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckedOut:
    """A credential handed to the gateway for one session. ``repr`` shows no secret."""

    kind: CredentialKind
    secret: Secret
    public: Mapping[str, str]


def info(row: Any) -> CredentialInfo:
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return CredentialInfo(
        row.id,
        row.target,
        row.account,
        row.kind,
        row.key_id,
        created,
        row.created_by,
        json.loads(row.public),
    )


def binding(row: Any) -> crypto.Binding:
    return crypto.Binding(row.id, row.kind, row.target, row.account)


def sealed(row: Any) -> crypto.Sealed:
    return crypto.Sealed(row.key_id, bytes(row.wrapped_key), bytes(row.ciphertext))


def normalize_private_key(data: bytes, passphrase: Secret | None) -> bytes:
    """Parse (OpenSSH or PEM, optionally encrypted) and re-export unencrypted: the vault's
    envelope protects it, and the gateway then needs no passphrase at checkout."""
    import asyncssh  # not at the top: every `lockgate` command imports this module

    try:
        key = asyncssh.import_private_key(
            data, passphrase.reveal() if passphrase is not None else None
        )
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, ValueError):
        raise InvalidInput("the private key does not parse (wrong format or passphrase)") from None
    return bytes(key.export_private_key())
