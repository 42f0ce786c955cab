"""The vault service: write-only credentials and checkout, the only way out.

STUB: signatures are the contract shared with the gateway; bodies are being implemented.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from vault.audit import AuditWriter
from vault.secret import Secret

CredentialKind = Literal["password", "private_key", "ssh_ca", "http_basic", "http_header", "totp_seed"]
CREDENTIAL_KINDS: frozenset[str] = frozenset(
    {"password", "private_key", "ssh_ca", "http_basic", "http_header", "totp_seed"}
)


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
    public: Mapping[str, str] = field(default_factory=dict)  # e.g. CA public key, header name, basic username


@dataclass(frozen=True)
class CheckedOut:
    """A credential handed to the gateway for one session. ``repr`` shows no secret."""

    kind: CredentialKind
    secret: Secret
    public: Mapping[str, str]
    passphrase: Secret | None = None


class VaultService:
    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        keyring: object,  # vault.keys.Keyring
        audit: AuditWriter,
    ) -> None:
        self.maker = maker
        self.keyring = keyring
        self.audit = audit

    async def set_credential(
        self,
        actor: str,
        target: str,
        account: str,
        kind: CredentialKind,
        secret: Secret,
        *,
        public: Mapping[str, str] | None = None,
        passphrase: Secret | None = None,
    ) -> CredentialInfo:
        """One-way write (replaces any previous credential for target+account). Validates the
        value for its kind (a private key must parse, with its passphrase). Audited."""
        raise NotImplementedError

    async def create_ssh_ca(self, actor: str, target: str, account: str) -> CredentialInfo:
        """Generate a CA key; ``public["ca_public_key"]`` is the line for TrustedUserCAKeys."""
        raise NotImplementedError

    async def list_credentials(self) -> list[CredentialInfo]:
        raise NotImplementedError

    async def checkout(self, target: str, account: str, session_id: str, actor: str) -> CheckedOut:
        """Decrypt for one session; writes an audit event first. Raises NotFound or IntegrityError."""
        raise NotImplementedError

    async def sign_user_certificate(
        self,
        target: str,
        account: str,
        session_id: str,
        actor: str,
        user_public_key: str,
        valid_until: datetime,
    ) -> str:
        """Sign an OpenSSH user certificate with the target's ``ssh_ca`` credential: principal =
        account, key id = session id, valid from now-1min until ``valid_until``. Audited."""
        raise NotImplementedError

    async def enroll_totp(self, actor: str, user: str) -> str:
        """Create and store a fresh TOTP seed for ``user``; returns the otpauth:// URI, once."""
        raise NotImplementedError

    async def verify_totp(self, user: str, code: str, now: datetime) -> bool:
        """Constant-time check with ±1 step window; a code is accepted once (replay refused)."""
        raise NotImplementedError

    async def rotate(self, actor: str, new_keyring: object) -> int:
        """Re-wrap every data key with the new current master key; returns how many."""
        raise NotImplementedError
