"""A rotation done on one node reaches the running others without a restart: they read the
new key file when it changes (or when a key id is unknown), and a node that cannot get the
new key refuses to seal under its retired one rather than write a credential no one can open."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.libdb import AuditLog, SessionMaker
from vault.errors import MasterKeyError
from vault.keys import Keyring, KeyringSource, new_master_key, write_keyring_file
from vault.secret import Secret
from vault.service import VaultService


def _node(maker: SessionMaker, audit: AuditLog, spec: str) -> VaultService:
    source = KeyringSource(spec)
    return VaultService(maker, source.load(), audit, source=source)


async def _rotate(node: VaultService, path: Path) -> None:
    """What ``lockgate vault rotate`` does on one node."""
    old = node.keyring
    transition = Keyring(new_master_key(), (old.current, *old.retired))
    write_keyring_file(path, transition)
    await node.rotate("admin", transition)
    write_keyring_file(path, Keyring(transition.current))


async def test_running_nodes_follow_a_rotation_made_elsewhere(
    maker: SessionMaker, audit: AuditLog, tmp_path: Path
) -> None:
    path = tmp_path / "master.key"
    write_keyring_file(path, Keyring(new_master_key()), exclusive=True)
    a, b = _node(maker, audit, f"file:{path}"), _node(maker, audit, f"file:{path}")
    await a.set_credential("admin", "db01", "root", "password", Secret(b"before"))
    await _rotate(a, path)
    # b has not restarted: it still opens what is stored, and seals under the new key.
    out = await b.checkout("db01", "root", "s1", "alice")
    assert out.secret.reveal() == b"before"
    await b.set_credential("admin", "db01", "app", "password", Secret(b"written-by-b"))
    assert b.keyring.current.key_id == a.keyring.current.key_id
    assert (await a.checkout("db01", "app", "s2", "alice")).secret.reveal() == b"written-by-b"


async def test_a_node_without_the_new_key_refuses_to_seal_under_the_retired_one(
    maker: SessionMaker, audit: AuditLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "master.key"
    first = Keyring(new_master_key())
    write_keyring_file(path, first, exclusive=True)
    monkeypatch.setenv("LG_TEST_OLD_KEY", first.serialize())
    a = _node(maker, audit, f"file:{path}")
    stale = _node(maker, audit, "env:LG_TEST_OLD_KEY")  # its source still holds the old key
    await a.set_credential("admin", "db01", "root", "password", Secret(b"before"))
    await _rotate(a, path)
    with pytest.raises(MasterKeyError, match="retired"):
        await stale.set_credential("admin", "db01", "app", "password", Secret(b"lost"))
    assert [c.account for c in await a.list_credentials()] == ["root"]
    with pytest.raises(MasterKeyError):
        await stale.checkout("db01", "root", "s1", "alice")
    # Once its source has the new key, the same node works without a restart.
    monkeypatch.setenv("LG_TEST_OLD_KEY", path.read_text())
    assert (await stale.checkout("db01", "root", "s1", "alice")).secret.reveal() == b"before"
