"""The changes to asyncssh's data path (gateway/ssh/fastpath.py), piece by piece; end to end
with real OpenSSH clients they are in test_ssh_basic.py, which README's test command runs once
with the fast path on and once with it off (LOCKGATE_SERVER_SSH_FASTPATH=false)."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh
import pytest
from asyncssh.crypto.chacha import ChachaCipher, chacha20, poly1305_verify
from asyncssh.crypto.cipher import GCMCipher
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.ssh import fastpath
from gateway.ssh.listener import CIPHERS
from gateway.ssh.upstream import UPSTREAM_CIPHERS
from tests.gateway.ssh.conftest import Gateway
from tests.target import TARGET_USER


@pytest.fixture
def installed() -> None:
    """The fast path in this process (never requested by the run with it off: not e2e)."""
    assert fastpath.install(True), "the fast path did not install on this asyncssh"


def test_no_leg_offers_a_cbc_cipher() -> None:
    """The premise of dropping asyncssh's MSG_IGNORE before every packet."""
    assert not [c for c in (*CIPHERS, *UPSTREAM_CIPHERS) if "cbc" in c]


@pytest.mark.usefixtures("installed")
@pytest.mark.parametrize("size", [0, 1, 15, 16, 63, 64, 65, 4096, 32768 + 9, 262_144])
def test_chacha_packets_verify_with_asyncssh_own_primitives(size: int) -> None:
    key = os.urandom(64)
    header, data = os.urandom(4), os.urandom(size)
    for seq in (0, 1, 2**32 - 1):
        nonce = seq.to_bytes(8, "big")
        sealed, tag = ChachaCipher(key).encrypt_and_sign(header, data, nonce)
        assert len(sealed) == 4 + size
        assert size < 8 or sealed[4:] != data  # a byte or two may encrypt to itself
        # asyncssh's module-level functions are not replaced: they are the reference.
        assert chacha20(key[32:], sealed[:4], nonce, 0) == header
        assert poly1305_verify(key[:32], sealed, nonce, tag)
        assert chacha20(key[:32], sealed[4:], nonce, 1) == data
        assert ChachaCipher(key).verify_and_decrypt(sealed[:4], sealed[4:], nonce, tag) == data
        assert not poly1305_verify(key[:32], sealed[:-1] + bytes([sealed[-1] ^ 1]), nonce, tag)


@pytest.mark.usefixtures("installed")
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


class _Open(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # no authentication: these tests are about packets


async def _run_on_loopback(
    handle: Callable[[asyncssh.SSHServerProcess[bytes]], Awaitable[None]],
) -> tuple[bytes, int]:
    """Run one command against a real asyncssh server whose process is ``handle``: its output
    and how many packets the client received for it (asyncssh's private sequence number)."""
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_factory=_Open,
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        process_factory=handle,
        encoding=None,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncssh.connect(
            "127.0.0.1", port, known_hosts=None, username="u", config=None
        ) as conn:
            seq: Any = conn
            before = seq._recv_seq
            result = await conn.run("anything", encoding=None, check=True)
            assert isinstance(result.stdout, bytes)
            return result.stdout, seq._recv_seq - before
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.usefixtures("installed")
async def test_connection_over_loopback_sends_no_empty_ignore() -> None:
    """Every packet after the key exchange counts in the receiver's sequence number; 1 MB of
    channel data in 32 KB packets must take ~32 of them, not ~64."""

    async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
        process.stdout.write(b"x" * (1 << 20))
        process.exit(0)

    out, received = await _run_on_loopback(handle)
    assert out == b"x" * (1 << 20)
    assert 32 <= received < 48


class _PublicOnly:
    """A channel seen through its public API only: reading a private attribute fails."""

    def __init__(self, chan: object) -> None:
        self.__dict__.update(wrapped=chan, used=[])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AssertionError(f"with the fast path off, write_data read asyncssh's {name}")
        self.used.append(name)
        return getattr(self.wrapped, name)


@pytest.mark.parametrize("on", [True, False], ids=["fast-path", "stock"])
async def test_write_data_delivers_every_byte_with_and_without_the_fast_path(
    on: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the fast path write_data is the public ``chan.write`` and touches nothing else.
    3 MB in chunks of odd sizes: more than asyncssh's 2 MB window, so part of it waits for
    window adjustments either way."""
    if on:
        assert fastpath.install(True)
    else:
        monkeypatch.setattr(fastpath, "_installed", False)
    payload = os.urandom(3 * 1024 * 1024 + 5)
    seen: list[_PublicOnly] = []

    async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
        chan: Any = process.channel
        if not on:
            chan = _PublicOnly(chan)
            seen.append(chan)
        for start in range(0, len(payload), 100_003):
            fastpath.write_data(chan, payload[start : start + 100_003])
            await process.stdout.drain()
        process.exit(0)

    out, _ = await _run_on_loopback(handle)
    assert out == payload
    assert on or {name for p in seen for name in p.used} == {"write"}


def test_untested_asyncssh_runs_unchanged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(fastpath, "_installed", None)
    monkeypatch.setattr(asyncssh, "__version__", "2.99.0")
    patched = asyncssh.connection.SSHConnection.data_received
    with caplog.at_level(logging.WARNING, "gateway.ssh.fastpath"):
        assert fastpath.install(True) is False
    assert "asyncssh 2.99.0 is not the tested 2.24.x" in caplog.text
    assert asyncssh.connection.SSHConnection.data_received is patched  # nothing new applied


def test_disabled_fast_path_applies_nothing_and_the_first_decision_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """server.ssh_fastpath = false: asyncssh stays as shipped, whatever is asked later in the
    process (its classes are shared by every connection; no half-changed asyncssh)."""
    monkeypatch.setattr(fastpath, "_installed", None)
    stock = object()
    monkeypatch.setattr(asyncssh.connection.SSHConnection, "data_received", stock)
    assert fastpath.install(False) is False
    assert fastpath.installed() is False
    assert fastpath.install(True) is False
    assert asyncssh.connection.SSHConnection.data_received is stock


def _switch_from_environment() -> bool:
    word = os.environ.get("LOCKGATE_SERVER_SSH_FASTPATH", "true").strip().lower()
    return word not in {"false", "0", "no"}


async def test_the_gateway_runs_the_fast_path_exactly_as_configured(gateway: Gateway) -> None:
    """Run by both passes of README's test command (e2e: it needs the sshd target): the
    switch reaches the gateway's configuration, and asyncssh is changed exactly when it is on,
    so the pass with it off really runs stock asyncssh. Bulk output arrives whole either way."""
    expected = _switch_from_environment()
    assert gateway.services.config.server.ssh_fastpath is expected
    assert fastpath.installed() is expected
    patched = asyncssh.connection.SSHConnection.data_received is fastpath._data_received
    assert patched is expected
    await gateway.grant("alice")
    code, out, err = await gateway.ssh(
        "alice", f"alice+{TARGET_USER}@db01", "head -c 3000000 /dev/zero"
    )
    assert code == 0, err
    assert out == bytes(3_000_000)
