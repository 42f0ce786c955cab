"""Envelope encryption, no I/O.

Each secret gets a fresh 256-bit data key. The secret is sealed with AES-256-GCM under the
data key with associated data naming the credential's id, kind, target and account, so a
ciphertext moved to another row fails to open. The data key is sealed with AES-256-GCM
under the master key, bound to the master key id and the credential id. Any mismatch, flip
or truncation raises IntegrityError; there is no unauthenticated path.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.errors import IntegrityError
from vault.keys import Keyring, MasterKey

NONCE = 12


@dataclass(frozen=True)
class Sealed:
    key_id: str
    wrapped_key: bytes  # nonce || AES-GCM(master, data key)
    ciphertext: bytes  # nonce || AES-GCM(data key, secret)


@dataclass(frozen=True)
class Binding:
    """What a ciphertext belongs to; it is authenticated, not secret."""

    credential_id: str
    kind: str
    target: str
    account: str

    def aad(self) -> bytes:
        return json.dumps(
            ["lockgate-secret-v1", self.credential_id, self.kind, self.target, self.account]
        ).encode()


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < NONCE + 16:
        raise IntegrityError("ciphertext is truncated")
    try:
        return AESGCM(key).decrypt(blob[:NONCE], blob[NONCE:], aad)
    except InvalidTag:
        raise IntegrityError("ciphertext failed authentication") from None


def _wrap_aad(key_id: str, credential_id: str) -> bytes:
    return json.dumps(["lockgate-dek-v1", key_id, credential_id]).encode()


def seal(master: MasterKey, binding: Binding, plaintext: bytes) -> Sealed:
    data_key = AESGCM.generate_key(bit_length=256)
    return Sealed(
        key_id=master.key_id,
        wrapped_key=_seal(master.key, data_key, _wrap_aad(master.key_id, binding.credential_id)),
        ciphertext=_seal(data_key, plaintext, binding.aad()),
    )


def _unwrap(keyring: Keyring, sealed: Sealed, credential_id: str) -> bytes:
    master = keyring.get(sealed.key_id)
    try:
        return _open(master.key, sealed.wrapped_key, _wrap_aad(sealed.key_id, credential_id))
    except IntegrityError:
        raise IntegrityError(
            "data key failed authentication (wrong master key or tampered row)"
        ) from None


def open_sealed(keyring: Keyring, binding: Binding, sealed: Sealed) -> bytes:
    data_key = _unwrap(keyring, sealed, binding.credential_id)
    return _open(data_key, sealed.ciphertext, binding.aad())


def rewrap(keyring: Keyring, new_master: MasterKey, sealed: Sealed, credential_id: str) -> Sealed:
    """The same ciphertext with its data key wrapped by ``new_master``."""
    data_key = _unwrap(keyring, sealed, credential_id)
    wrapped = _seal(new_master.key, data_key, _wrap_aad(new_master.key_id, credential_id))
    return Sealed(new_master.key_id, wrapped, sealed.ciphertext)
