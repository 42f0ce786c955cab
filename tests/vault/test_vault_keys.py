"""Master key sources: file permissions, env, providers; no key material in messages."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from vault.errors import MasterKeyError
from vault.keys import (
    Keyring,
    generate_master_key_file,
    load_keyring,
    new_master_key,
    register_key_provider,
)


def test_file_round_trip_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    ring = generate_master_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = load_keyring(f"file:{path}")
    assert loaded.current.key_id == ring.current.key_id
    assert loaded.current.key == ring.current.key
    with pytest.raises(MasterKeyError):
        generate_master_key_file(path)  # never overwrites


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    generate_master_key_file(path)
    path.chmod(mode)
    with pytest.raises(MasterKeyError, match="chmod 600"):
        load_keyring(f"file:{path}")


def test_missing_and_garbage(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="does not exist"):
        load_keyring(f"file:{tmp_path / 'nope'}")
    bad = tmp_path / "bad.key"
    bad.write_text("lgmk1:abc:" + base64.b64encode(b"short").decode() + "\n")
    bad.chmod(0o600)
    with pytest.raises(MasterKeyError) as info:
        load_keyring(f"file:{bad}")
    assert base64.b64encode(b"short").decode() not in str(info.value)
    (tmp_path / "dir.key").mkdir()
    with pytest.raises(MasterKeyError, match="regular file"):
        load_keyring(f"file:{tmp_path / 'dir.key'}")


def test_env_source(monkeypatch: pytest.MonkeyPatch) -> None:
    ring = Keyring(new_master_key())
    monkeypatch.setenv("LG_TEST_MASTER", ring.serialize())
    assert load_keyring("env:LG_TEST_MASTER").current.key == ring.current.key
    monkeypatch.delenv("LG_TEST_MASTER")
    with pytest.raises(MasterKeyError, match="not set"):
        load_keyring("env:LG_TEST_MASTER")


def test_provider_hook() -> None:
    ring = Keyring(new_master_key())
    register_key_provider(
        "testkms", lambda rest: ring if rest == "key1" else Keyring(new_master_key())
    )
    assert load_keyring("testkms:key1") is ring
    with pytest.raises(MasterKeyError, match="no key provider"):
        load_keyring("otherkms:x")


def test_repr_hides_key() -> None:
    ring = Keyring(new_master_key())
    text = repr(ring) + str(ring) + repr(ring.current)
    assert base64.b64encode(ring.current.key).decode() not in text
    assert repr(ring.current.key) not in text
    assert "***" in text
