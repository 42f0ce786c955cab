"""Recording one session: cheap calls on the data path, chunked appends, a seal at the end.

The data-path methods only append to an in-memory buffer; it becomes one hash-chained chunk
when it grows past ``CHUNK_BYTES`` or at least every second, and the chunk goes to the
recorder's writer thread, so the event loop never waits on the disk. What is queued for the
disk is bounded: past ``HIGH_WATER`` bytes the pressure callbacks are told to stop reading
from the target, and below ``LOW_WATER`` to go on. A write error is reported once to the
failure callbacks (the gateway then ends the session: there is never a live, unrecorded
session) and every later call raises.

Keystrokes are kept only when the target echoes them back. Printable input that is not
echoed (a password at ``sudo``, ``read -s``, ``stty -echo``) is recorded only as a count.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recorder.disk import post, sha256_file, write_all
from recorder.errors import RecordingFailed
from recorder.events import (
    CHUNK_HEAD,
    CHUNK_MAGIC,
    GENESIS,
    HASH_LEN,
    MAGIC,
    MASKED,
    RECORD_HEAD,
    RESIZE,
    Kind,
    chain,
    encode_record,
)
from recorder.http import HttpExchange, encode_exchange, encode_websocket_open
from recorder.scp import ScpCommand, ScpTracker
from recorder.sftp import SftpTracker

if TYPE_CHECKING:
    from recorder.recorder import Recorder

CHUNK_BYTES = 256 * 1024
FLUSH_SECONDS = 1.0
ECHO_WAIT = 0.5  # seconds an unechoed keystroke may wait before it counts as hidden
MAX_SIZE = 4096
WRITEV_PARTS = 64  # up to this many records of a chunk are written without joining them
HIGH_WATER = 8 * 1024 * 1024  # bytes queued for the disk before the session is paused
LOW_WATER = 2 * 1024 * 1024


def _printable(byte: int) -> bool:
    return 0x20 <= byte < 0x7F or byte >= 0x80


def _clamp(value: int) -> int:
    return max(1, min(int(value), MAX_SIZE))


@dataclass(frozen=True)
class Seal:
    session_id: str
    path: Path
    sha256: str
    chain_head: str
    size: int
    duration: float


class SessionRecording:
    def __init__(
        self,
        recorder: Recorder,
        session_id: str,
        path: Path,
        fd: int,
        width: int,
        height: int,
        pty: bool,
    ) -> None:
        self.recorder = recorder
        self.session_id = session_id
        self.path = path
        self.width, self.height = width, height
        self.pty = pty
        self._fd = fd
        self._t0 = recorder.clock()
        self._buf: list[bytes] = []
        self._buffered = 0
        self._seq = 0
        self._prev = GENESIS
        self._size = len(MAGIC)
        self._failure: BaseException | None = None
        self._callbacks: list[Callable[[BaseException], None]] = []
        self._pending = bytearray()  # typed, not yet echoed
        self._pending_since = 0.0
        self._sftp = SftpTracker(self._sftp_op)
        self._sftp_callbacks: list[Callable[[Mapping[str, Any]], None]] = []
        self._scp: list[ScpTracker] = []
        self._closed = False
        self._sealing = False
        self.dropped = 0
        self._timer: asyncio.TimerHandle | None = None
        self._watchers: list[Callable[[bytes], None]] = []
        self._loop = asyncio.get_running_loop()
        self._queued = 0  # bytes handed to the writer thread and not yet written
        self._pressed = False
        self._pressure: list[Callable[[bool], None]] = []
        self._broken = False  # set by the writer thread after a failed write
        self.term = "xterm"
        self._geometry: asyncio.Future[None] | None = None  # the first pty request's row update

    # --- data path -----------------------------------------------------------------
    def _now(self) -> float:
        return self.recorder.clock() - self._t0

    def elapsed(self) -> float:
        """Seconds since the recording started, on the recording's own time axis."""
        return self._now()

    def _add(self, kind: Kind, data: bytes) -> None:
        if self._failure is not None:
            raise RecordingFailed("the recording has failed")
        if self._sealing:
            # Bytes still in flight while the session is torn down: the person no longer
            # sees them, and the sealed file must not change (nor its old descriptor, which
            # the OS may already have given to another file, be written to).
            self.dropped += len(data)
            return
        # Header and data stay separate: the data is copied once, in the writer thread; a
        # mutable buffer is copied now, as its owner may reuse it.
        if type(data) is not bytes:
            data = bytes(data)
        self._buf.append(RECORD_HEAD.pack(self._now(), kind, len(data)))
        self._buf.append(data)
        self._buffered += RECORD_HEAD.size + len(data)
        if self._buffered >= CHUNK_BYTES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def output(self, data: bytes) -> None:
        if self._pending:
            self._match_echo(data)
        self._add(Kind.OUTPUT, data)
        for watcher in self._watchers:
            watcher(data)

    def watch(self, callback: Callable[[bytes], None]) -> Callable[[], None]:
        """Call ``callback`` with each output chunk as it is recorded (a live view); returns
        the function that stops it. Only output: input is never shown, echoed or not."""
        self._watchers.append(callback)
        return lambda: self._watchers.remove(callback) if callback in self._watchers else None

    def input(self, data: bytes) -> None:
        if not self.pty:
            self._add(Kind.MASKED, MASKED.pack(len(data)))
            return
        if self._pending and self._now() - self._pending_since > ECHO_WAIT:
            self._hide_pending()
        if not self._pending:
            self._pending_since = self._now()
        self._pending += data

    def _match_echo(self, out: bytes) -> None:
        """Keep the typed bytes the target echoed; hide the printable ones it did not."""
        n = 0
        limit = min(len(self._pending), len(out))
        while n < limit and self._pending[n] == out[n]:
            n += 1
        if n:
            self._add(Kind.INPUT, bytes(self._pending[:n]))
            del self._pending[:n]
        elif self._pending and _printable(self._pending[0]):
            # The target answered with something other than the echo: what was typed
            # (a password at a prompt, input under `stty -echo`) is kept only as a count.
            k = 0
            while k < len(self._pending) and _printable(self._pending[k]):
                k += 1
            self._add(Kind.MASKED, MASKED.pack(k))
            del self._pending[:k]
        # Control keys (Enter, Ctrl-C, arrows, backspace) are not echoed literally but are
        # not secret either: keep them; hide anything printable left unechoed.
        while self._pending and (self._pending[0] < 0x20 or self._pending[0] == 0x7F):
            end = 1
            if self._pending[0] == 0x1B:
                end = min(len(self._pending), 3)
            self._add(Kind.INPUT, bytes(self._pending[:end]))
            del self._pending[:end]
        self._pending_since = self._now()

    def _hide_pending(self) -> None:
        printable = sum(1 for b in self._pending if _printable(b))
        if printable:
            self._add(Kind.MASKED, MASKED.pack(printable))
        self._pending.clear()

    def resize(self, width: int, height: int) -> None:
        self.width, self.height = _clamp(width), _clamp(height)
        self._add(Kind.RESIZE, RESIZE.pack(self.width, self.height))

    def terminal(self, term: str, width: int, height: int) -> None:
        """A pty request: its TERM and size. The first one is the recording's geometry (the
        database row and the asciicast header say it); later ones act as resizes."""
        self.width, self.height = _clamp(width or 80), _clamp(height or 24)
        term = "".join(c for c in term[:64] if c.isprintable()) or "xterm"
        fields = {"term": term, "width": self.width, "height": self.height}
        self._add(Kind.TERMINAL, json.dumps(fields).encode())
        if self._geometry is None:
            self.term = term
            self._geometry = asyncio.ensure_future(self.recorder.geometry(self.session_id, fields))

    def exec_command(self, command: str) -> None:
        self._add(Kind.EXEC, command.encode("utf-8", "replace"))

    def exit(self, status: int | None, signal: str | None = None) -> None:
        self._add(Kind.EXIT, json.dumps({"status": status, "signal": signal}).encode())

    def sftp_client(self, data: bytes) -> None:
        self._sftp.client(data)

    def sftp_server(self, data: bytes) -> None:
        self._sftp.server(data)

    def scp_channel(self, command: ScpCommand) -> ScpTracker:
        """A tracker for one legacy scp channel; its files are recorded (and reported to the
        SFTP callbacks) as SFTP's are. Feed it with ``source``/``sink`` per direction."""
        tracker = ScpTracker(command, self._sftp_op)
        self._scp.append(tracker)
        return tracker

    def _sftp_op(self, op: Mapping[str, Any]) -> None:
        self._add(Kind.SFTP, json.dumps(dict(op)).encode())
        for cb in self._sftp_callbacks:
            with contextlib.suppress(Exception):
                cb(op)

    def add_sftp_callback(self, cb: Callable[[Mapping[str, Any]], None]) -> None:
        """``cb(op)`` for each SFTP operation recorded (e.g. to audit it)."""
        self._sftp_callbacks.append(cb)

    def port_forward(self, host: str, port: int) -> None:
        self._add(Kind.FORWARD, json.dumps({"host": host, "port": port}).encode())

    def marker(self, kind: str, text: str) -> None:
        self._add(Kind.MARKER, json.dumps({"kind": kind, "text": text}).encode())

    def http_exchange(self, ex: HttpExchange) -> None:
        """One finished request or closed WebSocket of a web session, at the current time.
        ``ex.target`` must already be masked (``recorder.http.mask_query``); the well-known
        secret parameter names are masked again here. A body is kept only if given."""
        self._add(Kind.HTTP, encode_exchange(ex))

    def websocket_opened(self, target: str) -> None:
        """A WebSocket was opened at ``target`` (masked like ``http_exchange``'s)."""
        self._add(Kind.HTTP, encode_websocket_open(target))

    @property
    def size(self) -> int:
        """Bytes of the file so far, counting chunks still queued for the writer thread."""
        return self._size

    @property
    def backlog(self) -> int:
        """Bytes recorded and not yet on disk (buffered or queued for the writer thread)."""
        return self._buffered + self._queued

    def add_failure_callback(self, cb: Callable[[BaseException], None]) -> None:
        self._callbacks.append(cb)

    def add_pressure_callback(self, cb: Callable[[bool], None]) -> None:
        """``cb(True)``: the disk is behind, stop reading from the target; ``cb(False)``:
        it has caught up."""
        self._pressure.append(cb)

    # --- disk ------------------------------------------------------------------------
    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buf or self._failure is not None or self._sealing:
            return
        parts, self._buf = self._buf, []
        length = CHUNK_HEAD.size + self._buffered + HASH_LEN
        self._buffered = 0
        seq, self._seq = self._seq, self._seq + 1
        self._size += length
        self._queued += length
        self.recorder.writer.submit(lambda: self._write(seq, parts, length))
        if not self._pressed and self._queued > HIGH_WATER:
            self._press(True)

    def _write(self, seq: int, parts: list[bytes], length: int) -> None:
        """In the writer thread, in ``seq`` order: chain and append one chunk. The hashing
        happens here, off the event loop (hashlib releases the GIL)."""
        try:
            if not self._broken:
                if len(parts) > WRITEV_PARTS:  # many small records: one buffer is cheaper
                    parts = [b"".join(parts)]
                self._prev = chain(self._prev, seq, *parts)
                head = CHUNK_HEAD.pack(CHUNK_MAGIC, length - CHUNK_HEAD.size - HASH_LEN, seq)
                write_all(self._fd, [head, *parts, self._prev])
        except OSError as exc:
            self._broken = True
            post(self._loop, self._fail, exc)
        finally:
            post(self._loop, self._written, length)

    def _written(self, size: int) -> None:
        self._queued -= size
        if self._pressed and self._queued <= LOW_WATER:
            self._press(False)

    def _press(self, on: bool) -> None:
        self._pressed = on
        for cb in self._pressure:
            with contextlib.suppress(Exception):
                cb(on)

    async def synced(self) -> None:
        """Wait until everything flushed so far has been written (or has failed)."""
        await self.recorder.writer.run(lambda: None)

    def _fail(self, exc: BaseException) -> None:
        if self._failure is not None:
            return
        self._failure = exc
        for cb in self._callbacks:
            with contextlib.suppress(Exception):  # a broken callback must not hide the failure
                cb(exc)

    async def close(self, reason: str) -> Seal:
        """Flush, append the seal, fsync, and store the file's SHA-256 and chain head."""
        if self._closed:
            raise RecordingFailed("the recording is already closed")
        self._closed = True
        self.recorder.live.pop(self.session_id, None)
        if self._pending:
            self._hide_pending()
        self._sftp.finish()
        for scp in self._scp:
            scp.finish()
        duration = self._now()
        last = encode_record(duration, Kind.SEAL, json.dumps({"reason": reason}).encode())
        self._buf.append(last)
        self._buffered += len(last)
        self.flush()
        self._sealing = True
        failure: BaseException | None = None
        try:
            # Queued after every chunk of this file, so it runs once they are all written.
            await self.recorder.writer.run(self._sync_and_close)
        except OSError as exc:
            failure = exc
        failure = self._failure or failure
        if failure is not None:
            raise RecordingFailed(f"recording {self.session_id} could not be written") from failure
        if self._geometry is not None:
            with contextlib.suppress(Exception):
                await self._geometry
        digest = await asyncio.to_thread(sha256_file, self.path)
        seal = Seal(self.session_id, self.path, digest, self._prev.hex(), self._size, duration)
        await self.recorder.sealed(seal, reason)
        return seal

    def abandon(self) -> None:
        """Give up a recording that never started: nothing more is written, the file is shut."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._closed = self._sealing = True
        os.close(self._fd)

    def _sync_and_close(self) -> None:
        """In the writer thread."""
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
