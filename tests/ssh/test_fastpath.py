"""The changes to asyncssh's data path (gateway/ssh/fastpath.py), piece by piece; end to end
with real OpenSSH clients they are in test_ssh_basic.py."""

from __future__ import annotations

import logging
import os
from typing import Any

import asyncssh
import pytest
from asyncssh.crypto.chacha import ChachaCipher, chacha20, poly1305_verify
from asyncssh.crypto.cipher import GCMCipher
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.ssh import fastpath
from gateway.ssh.listener import CIPHERS
from gateway.ssh.upstream import UPSTREAM_CIPHERS


@pytest.fixture(autouse=True)
def installed() -> None:
    assert fastpath.install()


def test_no_leg_offers_a_cbc_cipher() -> None:
    """The premise of dropping asyncssh's MSG_IGNORE before every packet."""
    assert not [c for c in (*CIPHERS, *UPSTREAM_CIPHERS) if "cbc" in c]


@pytest.mark.parametrize("size", [0, 1, 15, 16, 63, 64, 65, 4096, 32768 + 9, 262_144])
def test_chacha_packets_verify_with_asyncssh_own_primitives(size: int) -> None:
    key = os.urandom(64)
    header, data = os.urandom(4), os.urandom(size)
    for seq in (0, 1, 2**32 - 1):
        nonce = seq.to_bytes(8, "big")
        sealed, tag = ChachaCipher(key).encrypt_and_sign(header, data, nonce)
        assert len(sealed) == 4 + size
        assert size == 0 or sealed[4:] != data
        # asyncssh's module-level functions are not replaced: they are the reference.
        assert chacha20(key[32:], sealed[:4], nonce, 0) == header
        assert poly1305_verify(key[:32], sealed, nonce, tag)
        assert chacha20(key[:32], sealed[4:], nonce, 1) == data
        assert ChachaCipher(key).verify_and_decrypt(sealed[:4], sealed[4:], nonce, tag) == data
        assert not poly1305_verify(key[:32], sealed[:-1] + bytes([sealed[-1] ^ 1]), nonce, tag)


def test_gcm_keeps_its_invocation_counter_per_packet() -> None:
    key, iv = os.urandom(16), os.urandom(12)
    sender, receiver = GCMCipher("aes128-gcm", key, iv), GCMCipher("aes128-gcm", key, iv)
    reference = AESGCM(key)
    counter = int.from_bytes(iv[4:], "big")
    for n in range(5):
        header, data = os.urandom(4), os.urandom(1000 * n + 16)
        sealed, tag = sender.encrypt_and_sign(header, data)
        nonce = iv[:4] + ((counter + n) % 2**64).to_bytes(8, "big")
        assert reference.decrypt(nonce, sealed[4:] + tag, header) == data
        assert receiver.verify_and_decrypt(header, sealed[4:], tag) == data
    assert receiver.verify_and_decrypt(b"\0\0\0\0", b"x" * 16, b"\0" * 16) is None


async def test_connection_over_loopback_sends_no_empty_ignore() -> None:
    """A real asyncssh pair: every packet after the key exchange counts in the receiver's
    sequence number; 1 MB of channel data in 32 KB packets must take ~32 of them, not ~64."""
    key = asyncssh.generate_private_key("ssh-ed25519")

    async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
        process.stdout.write(b"x" * (1 << 20))
        process.exit(0)

    class Open(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return False  # no authentication: this test is about packets

    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_factory=Open,
        server_host_keys=[key],
        process_factory=handle,
        encoding=None,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncssh.connect(
            "127.0.0.1", port, known_hosts=None, username="u", config=None
        ) as conn:
            seq: Any = conn  # asyncssh's private packet counter
            before = seq._recv_seq
            result = await conn.run("anything", encoding=None)
            assert result.stdout == b"x" * (1 << 20)
            received = seq._recv_seq - before
    finally:
        server.close()
    assert 32 <= received < 48


def test_untested_asyncssh_runs_unchanged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(fastpath, "_installed", None)
    monkeypatch.setattr(asyncssh, "__version__", "2.99.0")
    patched = asyncssh.connection.SSHConnection.data_received
    with caplog.at_level(logging.WARNING, "gateway.ssh.fastpath"):
        assert fastpath.install() is False
    assert "asyncssh 2.99.0 is not the tested 2.24.x" in caplog.text
    assert asyncssh.connection.SSHConnection.data_received is patched  # nothing new applied
