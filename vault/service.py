"""The vault service: write-only credentials, and checkout as the only way out.

Nothing here returns plaintext except ``checkout`` (to the gateway, for one session, audited
before it returns) and ``enroll_totp`` (the person's own enrolment URI, once). Every write
and every checkout is audited inside the same transaction; if the audit write fails, the
secret is neither stored nor returned.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, get_args

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from vault import crypto, totp
from vault.audit import AuditWriter
from vault.errors import InvalidInput, MasterKeyError, NotFound
from vault.keys import Keyring, KeyringSource, MasterKey
from vault.records import CheckedOut, CredentialInfo, CredentialKind
from vault.records import binding as _binding
from vault.records import info as _info
from vault.records import normalize_private_key as _normalize_private_key
from vault.records import sealed as _sealed
from vault.secret import Secret
from vault.tables import credentials, totp_state

CREDENTIAL_KINDS: frozenset[str] = frozenset(get_args(CredentialKind))
# The account slot a target's provisioner key is kept under: no account name has an "@",
# so it can never be checked out for a session (and only that kind may sit there).
PROVISIONER_ACCOUNT = "@provisioner"
MAX_SECRET = 64 * 1024
# What ``checkout`` hands out: secrets presented upstream as they are. An ``ssh_ca`` key only
# signs (``sign_user_certificate``); a ``totp_seed`` only verifies codes.
CHECKOUT_KINDS: frozenset[str] = frozenset(
    {"password", "private_key", "http_basic", "http_header", "oidc_client_secret"}
)
_SET_KINDS = CREDENTIAL_KINDS - {"ssh_ca", "totp_seed", "oidc_refresh_token"}


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _key_ids(keyring: Keyring) -> set[str]:
    return {k.key_id for k in (keyring.current, *keyring.retired)}


class VaultService:
    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        keyring: Keyring,
        audit: AuditWriter,
        clock: Callable[[], datetime] = _utcnow,
        source: KeyringSource | None = None,
    ) -> None:
        self.maker = maker
        self.keyring = keyring
        self.source = source
        self.audit = audit
        self.clock = clock

    async def _store(
        self,
        db: AsyncSession,
        actor: str,
        target: str,
        account: str,
        kind: str,
        plaintext: bytes,
        public: Mapping[str, str],
    ) -> CredentialInfo:
        if not target or not account or len(target) > 80 or len(account) > 64:
            raise InvalidInput("a credential needs a target and an account")
        cred_id = f"cr-{secrets.token_hex(6)}"
        current = await self._sealing_key(db)
        sealed = crypto.seal(current, crypto.Binding(cred_id, kind, target, account), plaintext)
        await self.audit.append(
            db,
            actor=actor,
            action="credential.set",
            subject=f"{account}@{target}",
            details={"kind": kind},
            access_changed=True,
        )
        await db.execute(
            credentials.delete().where(
                credentials.c.target == target, credentials.c.account == account
            )
        )
        await db.execute(
            credentials.insert().values(
                id=cred_id,
                target=target,
                account=account,
                kind=kind,
                key_id=sealed.key_id,
                wrapped_key=sealed.wrapped_key,
                ciphertext=sealed.ciphertext,
                public=json.dumps(dict(public), sort_keys=True),
                created_at=self.clock(),
                created_by=actor,
            )
        )
        row = (await db.execute(sa.select(credentials).where(credentials.c.id == cred_id))).one()
        return _info(row)

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
        """One-way write (replaces any credential for target+account), validated for its
        kind. Audited. The secret cannot be read back through any method but checkout."""
        public = dict(public or {})
        if kind not in _SET_KINDS:
            raise InvalidInput(f"credential kind {kind!r} cannot be set this way")
        value = secret.reveal()
        if not value or len(value) > MAX_SECRET:
            raise InvalidInput("the secret is empty or too large")
        if (kind == "provisioner") != (account == PROVISIONER_ACCOUNT):
            raise InvalidInput("a provisioner key is set with --provisioner, and only there")
        if kind == "provisioner" and not public.get("username"):
            raise InvalidInput("a provisioner key needs the login name it is for")
        if kind in ("private_key", "provisioner"):
            value = _normalize_private_key(value, passphrase)
        if kind == "http_basic" and not public.get("username"):
            raise InvalidInput("http_basic needs a username")
        if kind == "http_header" and not public.get("header"):
            raise InvalidInput("http_header needs a header name")
        async with self.maker() as db, db.begin():
            return await self._store(db, actor, target, account, kind, value, public)

    async def create_ssh_ca(self, actor: str, target: str, account: str) -> CredentialInfo:
        """Generate a CA; ``public["ca_public_key"]`` is the line for TrustedUserCAKeys."""
        from vault import sshca  # asyncssh: see normalize_private_key

        private, public_line = sshca.generate_ca()
        async with self.maker() as db, db.begin():
            return await self._store(
                db, actor, target, account, "ssh_ca", private, {"ca_public_key": public_line}
            )

    async def credential_kind(self, target: str, account: str) -> str | None:
        """The kind of the credential for target+account (no decryption, no audit)."""
        async with self.maker() as db:
            return (
                await db.execute(
                    sa.select(credentials.c.kind).where(
                        credentials.c.target == target, credentials.c.account == account
                    )
                )
            ).scalar()

    async def list_credentials(self) -> list[CredentialInfo]:
        async with self.maker() as db:
            rows = (
                await db.execute(
                    sa.select(credentials)
                    .where(credentials.c.kind.notin_(["totp_seed", "oidc_refresh_token"]))
                    .order_by(credentials.c.target, credentials.c.account)
                )
            ).all()
        return [_info(r) for r in rows]

    def _keys(self) -> Keyring:
        """The keyring, re-read first when its file was replaced (a rotation elsewhere)."""
        if self.source is not None and self.source.changed():
            self._reload()
        return self.keyring

    def _reload(self) -> bool:
        """Re-read the key source; False (keeping the keys in hand) if it cannot be read."""
        if self.source is None:
            return False
        try:
            self.keyring = self.source.load()
        except MasterKeyError:
            return False
        return True

    def _open(self, row: Any) -> bytes:
        """Decrypt a row; a key id this node does not hold makes it re-read its keys once
        (another node rotated) before failing."""
        try:
            return crypto.open_sealed(self._keys(), _binding(row), _sealed(row))
        except MasterKeyError:
            if not self._reload():
                raise
            return crypto.open_sealed(self.keyring, _binding(row), _sealed(row))

    async def _sealing_key(self, db: AsyncSession) -> MasterKey:
        """The key to seal under. A node that has not seen a rotation would seal under the
        retired key, which the other nodes no longer hold: when a stored credential is
        wrapped under a key this node does not know, it re-reads its keys, and if the key is
        still unknown it refuses to seal."""
        used = set((await db.execute(sa.select(credentials.c.key_id).distinct())).scalars())
        keyring = self._keys()
        if used - _key_ids(keyring):
            self._reload()
            keyring = self.keyring
        if used - _key_ids(keyring):
            raise MasterKeyError(
                "this node's master key was retired by a rotation and the new key is not "
                "available here; install the new key file (no restart needed) and retry"
            )
        return keyring.current

    async def _checkout(
        self,
        db: AsyncSession,
        target: str,
        account: str,
        actor: str,
        action: str,
        details: dict[str, Any],
        kinds: frozenset[str],
    ) -> tuple[Any, bytes]:
        row = (
            await db.execute(
                sa.select(credentials).where(
                    credentials.c.target == target, credentials.c.account == account
                )
            )
        ).first()
        if row is None:
            raise NotFound(f"no credential for {account}@{target}")
        if row.kind not in kinds:
            # Checked before decryption: a CA key or a TOTP seed never leaves the vault.
            raise InvalidInput(f"the credential for {account}@{target} cannot be used this way")
        plaintext = self._open(row)
        await self.audit.append(
            db,
            actor=actor,
            action=action,
            subject=f"{account}@{target}",
            details={"kind": row.kind, **details},
        )
        return row, plaintext

    async def checkout(self, target: str, account: str, session_id: str, actor: str) -> CheckedOut:
        """Decrypt for one session; the audit event is committed before the secret is
        returned. Only ``CHECKOUT_KINDS`` leave the vault. Raises NotFound, InvalidInput
        (another kind, refused before decryption) or IntegrityError."""
        async with self.maker() as db, db.begin():
            row, plaintext = await self._checkout(
                db,
                target,
                account,
                actor,
                "credential.checkout",
                {"session": session_id},
                CHECKOUT_KINDS,
            )
        return CheckedOut(row.kind, Secret(plaintext), json.loads(row.public))

    async def checkout_provisioner(self, target: str, purpose: str, actor: str) -> CheckedOut:
        """Decrypt a target's provisioner key for one provisioning step (``purpose`` says
        which, e.g. ``create lg-alice-1a2b3c4d``); audited before it is returned. It is
        never handed to a session: ``checkout`` refuses the kind."""
        async with self.maker() as db, db.begin():
            row, plaintext = await self._checkout(
                db,
                target,
                PROVISIONER_ACCOUNT,
                actor,
                "credential.checkout",
                {"purpose": purpose},
                frozenset({"provisioner"}),
            )
        return CheckedOut(row.kind, Secret(plaintext), json.loads(row.public))

    async def delete_credential(self, actor: str, target: str, account: str) -> bool:
        """Remove the credential for target+account (audited); False if there was none."""
        async with self.maker() as db, db.begin():
            gone = await db.execute(
                credentials.delete().where(
                    credentials.c.target == target, credentials.c.account == account
                )
            )
            if not gone.rowcount:  # type: ignore[attr-defined]
                return False
            await self.audit.append(
                db,
                actor=actor,
                action="credential.delete",
                subject=f"{account}@{target}",
                details={},
                access_changed=True,
            )
        return True

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
        account, key id = session id, valid until ``valid_until``. Audited."""
        async with self.maker() as db, db.begin():
            _, ca_private = await self._checkout(
                db,
                target,
                account,
                actor,
                "credential.sign",
                {"session": session_id, "valid_until": valid_until.isoformat()},
                frozenset({"ssh_ca"}),
            )
        from vault import sshca

        return sshca.sign_user_key(
            ca_private,
            user_public_key,
            principal=account,
            key_id=session_id,
            now=self.clock(),
            valid_until=valid_until,
        )

    async def enroll_totp(self, actor: str, user: str) -> str:
        """Create and store a fresh TOTP seed for ``user``; returns the otpauth:// URI, once."""
        seed = totp.new_seed()
        async with self.maker() as db, db.begin():
            await self._store(db, actor, f"user:{user}", "totp", "totp_seed", seed, {})
            await db.execute(totp_state.delete().where(totp_state.c.user == user))
        return totp.provisioning_uri(seed, user)

    async def verify_totp(self, user: str, code: str, now: datetime) -> bool:
        """Constant-time check with a ±1 step window; each code is accepted once."""
        async with self.maker() as db, db.begin():
            row = (
                await db.execute(
                    sa.select(credentials).where(
                        credentials.c.target == f"user:{user}", credentials.c.account == "totp"
                    )
                )
            ).first()
            if row is None:
                totp.match(totp.new_seed(), code, now, -1)  # same work for unknown users
                return False
            seed = self._open(row)
            state = (
                await db.execute(
                    sa.select(totp_state.c.last_counter).where(totp_state.c.user == user)
                )
            ).first()
            last = int(state.last_counter) if state else -1
            counter = totp.match(seed, code, now, last)
            if counter is None:
                return False
            if state is None:
                await db.execute(totp_state.insert().values(user=user, last_counter=counter))
            else:
                result = await db.execute(
                    totp_state.update()
                    .where(totp_state.c.user == user, totp_state.c.last_counter == last)
                    .values(last_counter=counter)
                )
                if result.rowcount != 1:  # type: ignore[attr-defined]
                    return False  # a concurrent login used a code first
            return True

    async def keep_refresh_token(self, user: str, provider: str, token: Secret) -> None:
        """Store (or replace) the gateway's refresh token for ``user`` at an OpenID provider.
        It is the gateway's own, used only to ask the provider whether the person is still
        recognised; it never leaves the vault but through ``refresh_token``. Not audited:
        the sign-in or check that brings it is."""
        value = token.reveal()
        if not value or len(value) > MAX_SECRET:
            raise InvalidInput("the token is empty or too large")
        target, account = f"user:{user}", f"oidc:{provider}"
        cred_id = f"cr-{secrets.token_hex(6)}"
        kind = "oidc_refresh_token"
        sealed = crypto.seal(
            self.keyring.current, crypto.Binding(cred_id, kind, target, account), value
        )
        async with self.maker() as db, db.begin():
            await db.execute(
                credentials.delete().where(
                    credentials.c.target == target, credentials.c.account == account
                )
            )
            await db.execute(
                credentials.insert().values(
                    id=cred_id,
                    target=target,
                    account=account,
                    kind=kind,
                    key_id=sealed.key_id,
                    wrapped_key=sealed.wrapped_key,
                    ciphertext=sealed.ciphertext,
                    public="{}",
                    created_at=self.clock(),
                    created_by="lockgate",
                )
            )

    async def refresh_token(self, user: str, provider: str) -> Secret | None:
        async with self.maker() as db:
            row = (
                await db.execute(
                    sa.select(credentials).where(
                        credentials.c.target == f"user:{user}",
                        credentials.c.account == f"oidc:{provider}",
                        credentials.c.kind == "oidc_refresh_token",
                    )
                )
            ).first()
        if row is None:
            return None
        return Secret(crypto.open_sealed(self.keyring, _binding(row), _sealed(row)))

    async def forget_refresh_token(self, user: str, provider: str) -> None:
        async with self.maker() as db, db.begin():
            await db.execute(
                credentials.delete().where(
                    credentials.c.target == f"user:{user}",
                    credentials.c.account == f"oidc:{provider}",
                )
            )

    async def rotate(self, actor: str, new_keyring: Keyring) -> int:
        """Re-wrap every data key under ``new_keyring.current`` in one transaction; the
        ciphertexts are untouched. ``new_keyring`` must still hold the keys in use."""
        new = new_keyring.current
        async with self.maker() as db, db.begin():
            rows = (await db.execute(sa.select(credentials))).all()
            await self.audit.append(
                db,
                actor=actor,
                action="vault.rotate",
                subject=new.key_id,
                details={"credentials": len(rows)},
            )
            for row in rows:
                sealed = crypto.rewrap(new_keyring, new, _sealed(row), row.id)
                await db.execute(
                    credentials.update()
                    .where(credentials.c.id == row.id)
                    .values(key_id=sealed.key_id, wrapped_key=sealed.wrapped_key)
                )
        self.keyring = new_keyring
        return len(rows)
