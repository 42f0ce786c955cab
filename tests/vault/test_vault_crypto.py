"""Envelope encryption: round trip, and every kind of tampering fails loudly."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault import crypto
from vault.errors import IntegrityError, MasterKeyError
from vault.keys import Keyring, new_master_key

KEYRING = Keyring(new_master_key())
BINDING = crypto.Binding("cr-1", "password", "db01", "root")


@given(st.binary(min_size=1, max_size=4096))
def test_round_trip(plaintext: bytes) -> None:
    sealed = crypto.seal(KEYRING.current, BINDING, plaintext)
    assert plaintext not in sealed.ciphertext + sealed.wrapped_key or len(plaintext) < 4
    assert crypto.open_sealed(KEYRING, BINDING, sealed) == plaintext


def _flip(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 1]) + blob[index + 1 :]


SEALED = crypto.seal(KEYRING.current, BINDING, b"hunter2-hunter2")


@pytest.mark.parametrize(
    "tampered",
    [
        replace(SEALED, ciphertext=_flip(SEALED.ciphertext, 0)),  # nonce
        replace(SEALED, ciphertext=_flip(SEALED.ciphertext, 15)),  # body
        replace(SEALED, ciphertext=_flip(SEALED.ciphertext, len(SEALED.ciphertext) - 1)),  # tag
        replace(SEALED, ciphertext=SEALED.ciphertext[:-1]),
        replace(SEALED, ciphertext=SEALED.ciphertext[:10]),
        replace(SEALED, wrapped_key=_flip(SEALED.wrapped_key, 20)),
        replace(SEALED, wrapped_key=SEALED.wrapped_key[:-3]),
    ],
)
def test_tampering_fails(tampered: crypto.Sealed) -> None:
    with pytest.raises(IntegrityError) as info:
        crypto.open_sealed(KEYRING, BINDING, tampered)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "binding",
    [
        replace(BINDING, target="db02"),
        replace(BINDING, account="postgres"),
        replace(BINDING, kind="http_basic"),
        replace(BINDING, credential_id="cr-2"),
    ],
)
def test_swapped_rows_fail(binding: crypto.Binding) -> None:
    with pytest.raises(IntegrityError):
        crypto.open_sealed(KEYRING, binding, SEALED)


def test_wrong_master_key_fails() -> None:
    impostor = Keyring(replace(new_master_key(), key_id=KEYRING.current.key_id))
    with pytest.raises(IntegrityError):
        crypto.open_sealed(impostor, BINDING, SEALED)
    with pytest.raises(MasterKeyError):
        crypto.open_sealed(Keyring(new_master_key()), BINDING, SEALED)


def test_rewrap_keeps_ciphertext_and_needs_only_new_key() -> None:
    new = new_master_key()
    rewrapped = crypto.rewrap(KEYRING, new, SEALED, BINDING.credential_id)
    assert rewrapped.ciphertext == SEALED.ciphertext and rewrapped.key_id == new.key_id
    assert crypto.open_sealed(Keyring(new), BINDING, rewrapped) == b"hunter2-hunter2"
