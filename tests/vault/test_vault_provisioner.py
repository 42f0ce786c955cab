"""The provisioner key: kept in its own slot, only as that kind, never handed to a session,
checked out only for a provisioning step (audited with its purpose)."""

from __future__ import annotations

import asyncssh
import pytest

from tests.libdb import AuditLog
from vault.errors import InvalidInput
from vault.secret import Secret
from vault.service import PROVISIONER_ACCOUNT, VaultService


@pytest.fixture
def key() -> bytes:
    return bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())


async def test_the_provisioner_key_is_only_checked_out_for_provisioning(
    vault: VaultService, audit: AuditLog, key: bytes
) -> None:
    await vault.set_credential(
        "admin", "db01", PROVISIONER_ACCOUNT, "provisioner", Secret(key), public={"username": "lg"}
    )
    with pytest.raises(InvalidInput):
        await vault.checkout("db01", PROVISIONER_ACCOUNT, "se-1", "alice")
    out = await vault.checkout_provisioner("db01", "create lg-alice-1", "lockgate")
    assert out.kind == "provisioner" and out.public["username"] == "lg"
    assert asyncssh.import_private_key(out.secret.reveal()).get_algorithm() == "ssh-ed25519"
    events = [e for e in await audit.events() if e.action == "credential.checkout"]
    assert [e.details["purpose"] for e in events] == ["create lg-alice-1"]
    assert key.decode() not in repr(await audit.events())


async def test_the_provisioner_slot_holds_only_a_provisioner_key(
    vault: VaultService, key: bytes
) -> None:
    with pytest.raises(InvalidInput):
        await vault.set_credential("admin", "db01", PROVISIONER_ACCOUNT, "password", Secret("x"))
    with pytest.raises(InvalidInput):
        await vault.set_credential("admin", "db01", "root", "provisioner", Secret(key))
    with pytest.raises(InvalidInput):  # which login it is for is required
        await vault.set_credential("admin", "db01", PROVISIONER_ACCOUNT, "provisioner", Secret(key))


async def test_delete_credential_is_audited(vault: VaultService, audit: AuditLog) -> None:
    await vault.set_credential("admin", "db01", "lg-a-1", "password", Secret("pw-1"))
    assert await vault.delete_credential("lockgate", "db01", "lg-a-1")
    assert not await vault.delete_credential("lockgate", "db01", "lg-a-1")
    assert await vault.credential_kind("db01", "lg-a-1") is None
    assert [e.action for e in await audit.events()][-1] == "credential.delete"
