"""Terrapin, one step further than strict KEX: what a client that does not offer strict key
exchange may negotiate.

Strict KEX (``kex-strict-*-v00@openssh.com``) closes the Terrapin prefix-truncation attack;
every current OpenSSH client offers it. A client that does not is held to algorithms the
attack cannot exploit: AES-GCM, or AES-CTR with a MAC that is not encrypt-then-MAC; never
chacha20-poly1305 or an ``-etm`` MAC. With ``server.require_strict_kex`` such a client is
refused outright. The rule is applied where asyncssh chooses each algorithm, after it has
read the client's KEXINIT and knows whether strict KEX is on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import asyncssh

SAFE_CIPHERS = frozenset(
    {
        b"aes128-gcm@openssh.com",
        b"aes256-gcm@openssh.com",
        b"aes128-ctr",
        b"aes192-ctr",
        b"aes256-ctr",
    }
)
SAFE_MACS = frozenset({b"hmac-sha2-256", b"hmac-sha2-512"})


WAIT_FOR_CLIENT = 2.0  # seconds the first KEXINIT waits for the client's


def guard(conn: asyncssh.SSHServerConnection, *, require_strict: bool) -> None:
    """Hold ``conn`` to the rule above.

    Both sides choose from the lists the server advertised, so the server's first KEXINIT
    waits until the client's has arrived (every common client sends its own at once; after
    ``WAIT_FOR_CLIENT`` the full lists go out anyway) and advertises only the safe algorithms
    when the client has not offered strict KEX. Should an unsafe one be chosen all the same
    (a client that waited for the server's lists), the key exchange is refused."""
    # asyncssh's own methods, wrapped per connection (instance attributes shadow them).
    send: Callable[[], None] = conn._send_kexinit
    choose: Callable[[str, Sequence[bytes], Sequence[bytes]], bytes] = conn._choose_alg
    state = {"first": True, "deferred": False}

    def flush() -> None:
        if state["deferred"]:
            state["deferred"] = False
            send()

    def send_kexinit() -> None:
        if state["first"]:  # the initial key exchange: wait for the client's offer
            state["first"] = False
            state["deferred"] = True
            asyncio.get_running_loop().call_later(WAIT_FOR_CLIENT, flush)
            return
        send()

    def choose_alg(alg_type: str, local: Sequence[bytes], remote: Sequence[bytes]) -> bytes:
        strict = bool(getattr(conn, "_strict_kex", False))
        if alg_type == "key exchange" and not strict and require_strict:
            raise asyncssh.KeyExchangeFailed(
                "this gateway requires strict key exchange (OpenSSH 9.6 or later)"
            )
        if alg_type == "key exchange" and state["deferred"]:
            if not strict:
                conn._enc_algs = [a for a in conn._enc_algs if a in SAFE_CIPHERS]
                conn._mac_algs = [a for a in conn._mac_algs if a in SAFE_MACS]
            flush()
        if alg_type == "encryption" and not strict:
            local = [a for a in local if a in SAFE_CIPHERS]
        elif alg_type == "MAC" and not strict:
            local = [a for a in local if a in SAFE_MACS]
        return choose(alg_type, local, remote)

    setattr(conn, "_send_kexinit", send_kexinit)  # noqa: B010
    setattr(conn, "_choose_alg", choose_alg)  # noqa: B010


def negotiated(conn: Any) -> tuple[str, str]:
    """(cipher, MAC) negotiated client-to-server, for logs and tests."""
    enc = getattr(conn, "_enc_alg_cs", b"") or b""
    mac = getattr(conn, "_mac_alg_cs", b"") or b""
    return enc.decode(), mac.decode()
