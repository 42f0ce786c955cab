"""The vault service on a real database: write-only storage, audited checkout, tampering,
rotation, SSH certificates and TOTP."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest
import sqlalchemy as sa

from tests.libdb import AuditLog, FailingAudit, SessionMaker
from vault import totp
from vault.errors import IntegrityError, InvalidInput, NotFound
from vault.keys import Keyring, new_master_key
from vault.secret import Secret
from vault.service import VaultService
from vault.tables import credentials

PLAINTEXT = "S3cr3t-vault-plaintext-91c2"


async def test_set_and_checkout_is_audited(vault: VaultService, audit: AuditLog) -> None:
    info = await vault.set_credential("admin", "db01", "root", "password", Secret(PLAINTEXT))
    assert PLAINTEXT not in repr(info)
    assert [c.id for c in await vault.list_credentials()] == [info.id]
    out = await vault.checkout("db01", "root", "se-1", "alice")
    assert out.secret.reveal_text() == PLAINTEXT
    assert PLAINTEXT not in repr(out) and "***" in repr(out)
    events = await audit.events()
    assert [(e.action, e.subject) for e in events] == [
        ("credential.set", "root@db01"),
        ("credential.checkout", "root@db01"),
    ]
    assert events[1].details["session"] == "se-1"
    assert PLAINTEXT not in repr(events)


async def test_plaintext_not_in_database_file(
    vault: VaultService, db_url: str, maker: SessionMaker
) -> None:
    await vault.set_credential("admin", "db01", "root", "password", Secret(PLAINTEXT))
    if db_url.startswith("sqlite"):
        path = Path(db_url.split("///", 1)[1])
        for f in path.parent.glob(path.name + "*"):
            assert PLAINTEXT.encode() not in f.read_bytes()
    async with maker() as db:
        rows = (await db.execute(sa.select(credentials))).all()
    assert PLAINTEXT.encode() not in b"".join(
        bytes(r.ciphertext) + bytes(r.wrapped_key) for r in rows
    )


async def test_failed_audit_means_no_secret(
    maker: SessionMaker, keyring: Keyring, vault: VaultService
) -> None:
    await vault.set_credential("admin", "db01", "root", "password", Secret(PLAINTEXT))
    broken = VaultService(maker, keyring, FailingAudit())
    with pytest.raises(RuntimeError):
        await broken.checkout("db01", "root", "se-1", "alice")
    with pytest.raises(RuntimeError):
        await broken.set_credential("admin", "db02", "root", "password", Secret("x" * 20))
    assert [c.target for c in await vault.list_credentials()] == ["db01"]


async def test_swapped_rows_fail(vault: VaultService, maker: SessionMaker) -> None:
    await vault.set_credential("admin", "db01", "root", "password", Secret("first-secret"))
    await vault.set_credential("admin", "db02", "root", "password", Secret("second-secret"))
    async with maker() as db, db.begin():
        rows = {r.target: r for r in (await db.execute(sa.select(credentials))).all()}
        await db.execute(
            credentials.update()
            .where(credentials.c.target == "db01")
            .values(ciphertext=rows["db02"].ciphertext, wrapped_key=rows["db02"].wrapped_key)
        )
    with pytest.raises(IntegrityError) as info:
        await vault.checkout("db01", "root", "se-1", "alice")
    assert "secret" not in str(info.value)


async def test_bit_flip_in_database_fails(vault: VaultService, maker: SessionMaker) -> None:
    await vault.set_credential("admin", "db01", "root", "password", Secret(PLAINTEXT))
    async with maker() as db, db.begin():
        row = (await db.execute(sa.select(credentials))).one()
        blob = bytearray(row.ciphertext)
        blob[-5] ^= 0x40
        await db.execute(credentials.update().values(ciphertext=bytes(blob)))
    with pytest.raises(IntegrityError):
        await vault.checkout("db01", "root", "se-1", "alice")


async def test_wrong_master_key_fails(
    vault: VaultService, maker: SessionMaker, audit: AuditLog
) -> None:
    await vault.set_credential("admin", "db01", "root", "password", Secret(PLAINTEXT))
    other = VaultService(maker, Keyring(new_master_key()), audit)
    with pytest.raises(Exception) as info:
        await other.checkout("db01", "root", "se-1", "alice")
    assert PLAINTEXT not in str(info.value)


async def test_rotate_then_only_new_key_needed(
    vault: VaultService, maker: SessionMaker, keyring: Keyring, audit: AuditLog
) -> None:
    await vault.set_credential("admin", "db01", "root", "password", Secret(PLAINTEXT))
    await vault.create_ssh_ca("admin", "db02", "deploy")
    new = new_master_key()
    assert await vault.rotate("admin", Keyring(new, (keyring.current,))) == 2
    only_new = VaultService(maker, Keyring(new), audit)
    assert (await only_new.checkout("db01", "root", "s", "a")).secret.reveal_text() == PLAINTEXT
    assert {c.key_id for c in await only_new.list_credentials()} == {new.key_id}


async def test_validation(vault: VaultService) -> None:
    with pytest.raises(InvalidInput):
        await vault.set_credential("a", "db01", "root", "password", Secret(""))
    with pytest.raises(InvalidInput):
        await vault.set_credential("a", "db01", "root", "private_key", Secret("not a key"))
    with pytest.raises(InvalidInput):
        await vault.set_credential("a", "web", "x", "http_header", Secret("tok"))
    with pytest.raises(InvalidInput):
        await vault.set_credential("a", "db01", "root", "totp_seed", Secret("x"))
    with pytest.raises(NotFound):
        await vault.checkout("nope", "root", "s", "a")


async def test_encrypted_private_key_with_passphrase(vault: VaultService) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    data = key.export_private_key(passphrase="correct horse battery")
    with pytest.raises(InvalidInput):
        await vault.set_credential(
            "a", "db01", "root", "private_key", Secret(data), passphrase=Secret("wrong")
        )
    await vault.set_credential(
        "a", "db01", "root", "private_key", Secret(data), passphrase=Secret("correct horse battery")
    )
    out = await vault.checkout("db01", "root", "s", "a")
    loaded = asyncssh.import_private_key(out.secret.reveal())
    assert loaded.export_public_key() == key.export_public_key()


async def test_ssh_certificate(vault: VaultService, tmp_path: Path) -> None:
    info = await vault.create_ssh_ca("admin", "db01", "deploy")
    assert info.public["ca_public_key"].startswith("ssh-ed25519 ")
    user_key = asyncssh.generate_private_key("ssh-ed25519")
    until = datetime.now(UTC) + timedelta(minutes=30)
    cert = await vault.sign_user_certificate(
        "db01", "deploy", "se-42", "alice", user_key.export_public_key().decode(), until
    )
    path = tmp_path / "id-cert.pub"
    path.write_text(cert + "\n")
    listing = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert 'Key ID: "se-42"' in listing
    assert "Principals: \n                deploy" in listing
    assert "permit-pty" in listing and "permit-agent-forwarding" not in listing
    valid_to = listing.split("Valid: from ", 1)[1].split(" to ", 1)[1].split()[0]
    assert valid_to == until.astimezone().strftime("%Y-%m-%dT%H:%M:%S")


async def test_totp_accept_replay_window(vault: VaultService) -> None:
    uri = await vault.enroll_totp("admin", "alice")
    assert uri.startswith("otpauth://totp/Lockgate:alice?secret=")
    import base64

    secret = uri.split("secret=")[1].split("&")[0]
    seed = base64.b32decode(secret + "=" * (-len(secret) % 8))
    now = datetime(2026, 11, 22, 12, 0, 10, tzinfo=UTC)
    code = totp.code_at(seed, now)
    assert await vault.verify_totp("alice", code, now)
    assert not await vault.verify_totp("alice", code, now), "a code is accepted only once"
    later = now + timedelta(seconds=30)
    assert await vault.verify_totp("alice", totp.code_at(seed, later), later)
    far = now + timedelta(minutes=10)
    assert not await vault.verify_totp("alice", totp.code_at(seed, now), far)
    assert not await vault.verify_totp("alice", "12345x", far)
    assert not await vault.verify_totp("nobody", "123456", far)
    assert all(c.kind != "totp_seed" for c in await vault.list_credentials())


async def test_checkout_never_hands_out_a_ca_key_or_totp_seed(
    vault: VaultService, audit: AuditLog, maker: SessionMaker
) -> None:
    await vault.create_ssh_ca("admin", "db01", "deploy")
    uri = await vault.enroll_totp("admin", "alice")
    async with maker() as db:
        seed_row = (
            await db.execute(sa.select(credentials).where(credentials.c.kind == "totp_seed"))
        ).one()
    for target, account in (("db01", "deploy"), (seed_row.target, seed_row.account)):
        with pytest.raises(InvalidInput) as refused:
            await vault.checkout(target, account, "se-9", "alice")
        assert "PRIVATE KEY" not in str(refused.value) and uri not in repr(refused.value)
        assert await vault.credential_kind(target, account) in ("ssh_ca", "totp_seed")
    await vault.set_credential("admin", "db01", "root", "password", Secret(PLAINTEXT))
    with pytest.raises(InvalidInput):
        await vault.sign_user_certificate(
            "db01", "root", "se-9", "alice", "ssh-ed25519 AAAA", datetime.now(UTC)
        )
    actions = [e.action for e in await audit.events()]
    assert "credential.checkout" not in actions and "credential.sign" not in actions
    assert await vault.credential_kind("db01", "nothing") is None
