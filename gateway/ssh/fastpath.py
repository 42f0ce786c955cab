"""Cheaper packets on asyncssh's data path, installed once per process by :func:`install`.

Exec bulk through the gateway is bound by CPU on the two-core machines we measure on, and
asyncssh's cost is per packet, not per byte (PERF-NOTES #6). Profiling `head -c 300M` through
the gateway (``bench.ssh``) found the costs below, which are how asyncssh does things rather
than the protocol. Each change sends the same packets as asyncssh would, except the second,
which leaves out packets that carry nothing. Together they took the gateway's event-loop
thread from ~5 to ~3 CPU-seconds per GB of exec output.

1. **Received data is parsed at most 64 KB at a time.** asyncssh appends what the socket
   returned (up to 256 KB) to a ``bytes`` buffer and re-slices that buffer for every packet,
   copying the rest of it twice per packet: a byte of a 256 KB read was copied ~8 times.
2. **No empty ``MSG_IGNORE`` before every packet.** asyncssh sends one ahead of each packet
   once encrypting, a countermeasure for CBC ciphers' predictable IVs; neither leg offers a
   CBC cipher (``server.CIPHERS``, ``upstream.UPSTREAM_CIPHERS``; a test holds both to that),
   so it only doubled the encryptions and writes.
3. **No packet log line built for nothing**: asyncssh formats a description of every packet
   sent and received (type name, byte count) and only then finds debug level 3 is off.
4. **Cipher set-up once, not per packet**: AES-GCM keeps one ``AESGCM`` per key (asyncssh
   builds one per packet), and chacha20-poly1305 takes the Poly1305 key and the payload from
   one ChaCha20 stream and feeds Poly1305 without joining length and payload first.
5. **Channel data in one copy and one write** (:func:`write_data`, the bridge's write to the
   person): the packets of what the window allows are built straight from the data,
   encrypted, and handed to the socket in one write. asyncssh's ``write`` copies each byte
   about a dozen times on its way out (buffer, slice, string, channel and connection
   payloads, padding, MAC) and writes each packet on its own; on loopback every write wakes
   the reader, which on a busy two-core machine preempts the gateway.

Only the asyncssh release these were written against gets them (:data:`TESTED`); another one
runs stock, correct and slower, and the log says so once. ``server.ssh_fastpath = false``
(``LOCKGATE_SERVER_SSH_FASTPATH=false``) keeps stock asyncssh on any release: nothing here is
applied and :func:`write_data` is plain ``chan.write``. The test suite runs the SSH end-to-end
tests both ways.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

import asyncssh
from asyncssh import connection as _connection
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_IGNORE
from asyncssh.crypto import chacha as _chacha
from asyncssh.crypto import cipher as _cipher
from asyncssh.logging import SSHLogger
from asyncssh.packet import SSHPacketLogger
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20
from cryptography.hazmat.primitives.poly1305 import Poly1305

log = logging.getLogger(__name__)

TESTED = ("2.24.",)
RECV_STEP = 64 * 1024
_EMPTY_STRING = b"\0\0\0\0"  # asyncssh's String(b""), the body of its automatic MSG_IGNORE
_GCM_TAG = 16
_ZERO_NONCE_PREFIX = bytes(8)
_ZERO_BLOCK = bytes(64)

_SSHConnection: Any = _connection.SSHConnection
_PacketLogger: Any = SSHPacketLogger
_GCMCipher: Any = _cipher.GCMCipher
_ChachaCipher: Any = _chacha.ChachaCipher
_installed: bool | None = None


def install(enabled: bool) -> bool:
    """Install the changes when ``enabled`` (``server.ssh_fastpath``); return whether they are.

    The first call decides for the process, later calls return that decision whatever they
    pass: the changes are to asyncssh's classes, shared by every connection, and are never
    undone under live ones. False when disabled or when this asyncssh is not the tested one."""
    global _installed
    if _installed is not None:
        return _installed
    if not enabled:
        log.info("SSH fast path off (server.ssh_fastpath): asyncssh's data path runs unchanged")
        _installed = False
        return False
    if not asyncssh.__version__.startswith(TESTED):
        log.warning(
            "asyncssh %s is not the tested %s: its data path runs unchanged (slower)",
            asyncssh.__version__,
            "/".join(v + "x" for v in TESTED),
        )
        _installed = False
        return False
    _SSHConnection.data_received = _data_received
    _SSHConnection.send_packet = _without_empty_ignore(_SSHConnection.send_packet)
    _PacketLogger._log_packet = _quiet(_PacketLogger._log_packet)
    _GCMCipher.encrypt_and_sign = _gcm_encrypt_and_sign
    _GCMCipher.verify_and_decrypt = _gcm_verify_and_decrypt
    _ChachaCipher.encrypt_and_sign = _chacha_encrypt_and_sign
    _installed = True
    return True


def installed() -> bool:
    """Whether the changes are in effect in this process."""
    return _installed is True


# --- 1. parsing in steps ------------------------------------------------------------------
def _data_received(self: Any, data: bytes, datatype: object = None) -> None:
    if len(data) <= RECV_STEP:
        self._inpbuf += data
        self._recv_data()
        return
    view = memoryview(data)
    start = 0
    while start < len(data) and self._transport:  # (closed by what a step held: stop)
        step = RECV_STEP
        if self._recv_handler == self._recv_packet:  # a packet's body is pending: all of it
            step = max(step, 4 + self._pktlen + self._recv_macsize - self._recv_blocksize)
        self._inpbuf += view[start : start + step]
        start += step
        self._recv_data()


# --- 2. no empty MSG_IGNORE --------------------------------------------------------------
def _without_empty_ignore(send_packet: Any) -> Any:
    def send_packet_without_empty_ignore(
        self: Any, pkttype: int, *args: bytes, handler: object = None
    ) -> None:
        if pkttype == MSG_IGNORE and args == (_EMPTY_STRING,) and self._send_encryption:
            return
        send_packet(self, pkttype, *args, handler=handler)

    return send_packet_without_empty_ignore


# --- 3. no packet log line built for nothing ----------------------------------------------
def _quiet(log_packet: Any) -> Any:
    def log_packet_if_logged(self: Any, *args: Any) -> None:
        if self.logger._debug_level >= 3:  # where asyncssh's SSHLogger.packet() would log
            log_packet(self, *args)

    return log_packet_if_logged


# --- 4. cipher set-up once ------------------------------------------------------------------
def _aead(self: Any) -> AESGCM:
    aead: AESGCM | None = self.__dict__.get("_lockgate_aead")
    if aead is None:
        aead = self._lockgate_aead = AESGCM(self._key)
    return aead


def _gcm_encrypt_and_sign(self: Any, header: bytes, data: bytes) -> tuple[bytes, bytes]:
    sealed = _aead(self).encrypt(self._iv, data, header)
    self._update_iv()
    return header + sealed[:-_GCM_TAG], sealed[-_GCM_TAG:]


def _gcm_verify_and_decrypt(self: Any, header: bytes, data: bytes, mac: bytes) -> bytes | None:
    try:
        opened: bytes | None = _aead(self).decrypt(self._iv, data + mac, header)
    except InvalidTag:
        opened = None
    self._update_iv()
    return opened


def _chacha_encrypt_and_sign(
    self: Any, header: bytes, data: bytes, nonce: bytes
) -> tuple[bytes, bytes]:
    # OpenSSH's chacha20-poly1305: the length under the second key; under the main key,
    # block 0 of the stream gives the Poly1305 key and blocks 1.. encrypt the payload.
    iv = _ZERO_NONCE_PREFIX + nonce
    length = Cipher(ChaCha20(self._adkey, iv), None).encryptor().update(header)
    stream = Cipher(ChaCha20(self._key, iv), None).encryptor()
    mac = Poly1305(stream.update(_ZERO_BLOCK)[:32])
    body = stream.update(data)
    mac.update(length)
    mac.update(body)
    return length + body, mac.finalize()


# --- 5. channel data in one copy and one write --------------------------------------------
def write_data(chan: asyncssh.SSHServerChannel[bytes], data: bytes) -> None:
    """``chan.write(data)``, same packets on the wire, with the copies left out.

    Whatever the fast path cannot take goes to ``chan.write`` unchanged: data queued behind
    earlier data, a window too small for all of it (the rest waits in asyncssh's buffer as
    before), a key exchange in progress or due, compression, or asyncssh's debug logging.
    Without the fast path installed this is ``chan.write(data)`` and nothing else: asyncssh's
    private attributes are read only on the release they were written against."""
    if not _installed:
        chan.write(data)
        return
    c: Any = chan
    conn: Any = c._conn
    if not (
        c._send_state == "open"
        and not c._send_buf
        and c._send_window
        and c._send_chan is not None
        and c._encoding is None
        and conn is not None
        and conn._transport
        and conn._send_encryption
        and conn._kex_complete
        and conn._auth_complete
        and conn._compressor is None
        and not (conn._rekey_seconds and time.monotonic() >= conn._rekey_time)
        and SSHLogger._debug_level < 2  # asyncssh logs every write from level 2
    ):
        chan.write(data)
        return
    view = memoryview(data)
    limit = min(len(data), c._send_window)
    head = bytes((MSG_CHANNEL_DATA,)) + c._send_chan.to_bytes(4, "big")
    encrypt = conn._send_encryption.encrypt_packet
    blocksize, enchdrlen = conn._send_blocksize, conn._send_enchdrlen
    out: list[bytes] = []
    sent = 0
    while sent < limit and conn._rekey_bytes_sent < conn._rekey_bytes:
        n = min(limit - sent, c._send_pktsize)
        padlen = -(enchdrlen + 9 + n) % blocksize  # payload: type, channel, length, data
        if padlen < 4:
            padlen += blocksize
        prefix = bytes((padlen,)) + head + n.to_bytes(4, "big")
        packet = b"".join((prefix, view[sent : sent + n], os.urandom(padlen)))
        seq = conn._send_seq
        body, mac = encrypt(seq, len(packet).to_bytes(4, "big"), packet)
        out += (body, mac)
        conn._send_seq = (seq + 1) & 0xFFFFFFFF
        conn._rekey_bytes_sent += len(packet)
        sent += n
    if out:
        with contextlib.suppress(ConnectionError):  # as asyncssh's own send
            conn._transport.write(b"".join(out))
    c._send_window -= sent
    c._pause_resume_writing()
    if sent < len(data):
        chan.write(data[sent:])
