"""The recording file format: timed binary records inside hash-chained chunks.

File: ``MAGIC``, then chunks. A chunk is ``b"LGC1" | u32 length | u64 sequence | payload |
sha256(previous hash | sequence | payload)``; the first chunk chains from 32 zero bytes.
A payload is a run of records ``f64 offset-seconds | u8 kind | u32 length | data``.
The last chunk carries a SEAL record. Editing, dropping, reordering or truncating any byte
breaks the chain or the seal.
"""

from __future__ import annotations

import enum
import hashlib
import json
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

MAGIC = b"LOCKGATE-REC-1\n"
CHUNK_MAGIC = b"LGC1"
CHUNK_HEAD = struct.Struct("<4sIQ")
RECORD_HEAD = struct.Struct("<dBI")
SEQ = struct.Struct("<Q")
HASH_LEN = 32
GENESIS = bytes(HASH_LEN)
MAX_CHUNK = 16 * 1024 * 1024


class Kind(enum.IntEnum):
    META = 0  # JSON: session facts, terminal size, start time
    OUTPUT = 1  # bytes the target sent to the person
    INPUT = 2  # keystrokes the target echoed back
    MASKED = 3  # u32: count of keystrokes that were not echoed (never their text)
    RESIZE = 4  # u16 width, u16 height
    EXEC = 5  # UTF-8 command line
    EXIT = 6  # JSON: status, signal
    SFTP = 7  # JSON: one SFTP operation
    FORWARD = 8  # JSON: host, port
    MARKER = 9  # JSON: kind, text
    HTTP = 10  # JSON of one HTTP exchange or WebSocket event, then "\n" + body if recorded
    SEAL = 11  # JSON: end reason, duration
    TERMINAL = 12  # JSON: term, width, height: a pty request (the first is the first geometry)


RESIZE = struct.Struct("<HH")
MASKED = struct.Struct("<I")


def terminal_of(data: bytes) -> tuple[str, int, int]:
    """A TERMINAL record's (term, width, height)."""
    fields = json.loads(data)
    return str(fields.get("term") or "xterm"), int(fields["width"]), int(fields["height"])


def size_of(record: Record) -> tuple[int, int] | None:
    """The screen size a RESIZE or TERMINAL record sets (None for any other record)."""
    if record.kind is Kind.RESIZE:
        width, height = RESIZE.unpack(record.data)
        return int(width), int(height)
    if record.kind is Kind.TERMINAL:
        return terminal_of(record.data)[1:]
    return None


@dataclass(frozen=True)
class Record:
    t: float
    kind: Kind
    data: bytes


def encode_record(t: float, kind: Kind, data: bytes) -> bytes:
    return RECORD_HEAD.pack(t, kind, len(data)) + data


def chain(prev: bytes, seq: int, *payload: bytes) -> bytes:
    """The chunk's link: SHA-256 of the previous link, the sequence number and the payload
    (given whole or in consecutive parts)."""
    # update() rather than one concatenation: no copy of the payload, and hashlib lets
    # other threads run while it hashes a large buffer.
    h = hashlib.sha256(prev)
    h.update(SEQ.pack(seq))
    for part in payload:
        h.update(part)
    return h.digest()


def encode_chunk(prev: bytes, seq: int, payload: bytes) -> tuple[bytes, bytes]:
    digest = chain(prev, seq, payload)
    return CHUNK_HEAD.pack(CHUNK_MAGIC, len(payload), seq) + payload + digest, digest


def decode_records(payload: bytes) -> Iterator[Record]:
    pos = 0
    while pos < len(payload):
        if pos + RECORD_HEAD.size > len(payload):
            raise ValueError("record header truncated")
        t, kind, length = RECORD_HEAD.unpack_from(payload, pos)
        pos += RECORD_HEAD.size
        if pos + length > len(payload):
            raise ValueError("record truncated")
        yield Record(t, Kind(kind), payload[pos : pos + length])
        pos += length


@dataclass(frozen=True)
class Chunk:
    seq: int
    offset: int  # file offset of the chunk header
    payload: bytes
    digest: bytes


@dataclass(frozen=True)
class ChainPoint:
    """Where a recording's next chunk starts and what it chains from: an index that goes on
    where it stopped (``recorder.indexer.index_more``) starts its chain check here."""

    pos: int
    prev: bytes
    seq: int


def read_chunks(
    data: bytes | mmap.mmap, complete_only: bool = False, at: ChainPoint | None = None
) -> Iterator[Chunk]:
    """Parse and check the chain; raises ValueError at the first inconsistency. With
    ``complete_only`` (a recording still being written), a truncated last chunk ends the
    iteration instead. With ``at``, ``data`` is the file from that point on."""
    if at is None:
        if data[: len(MAGIC)] != MAGIC:
            raise ValueError("not a Lockgate recording")
        base, pos, prev, seq = 0, len(MAGIC), GENESIS, 0
    else:
        base, pos, prev, seq = at.pos, 0, at.prev, at.seq
    while pos < len(data):
        if pos + CHUNK_HEAD.size > len(data):
            if complete_only:
                return
            raise ValueError(f"chunk {seq} header truncated")
        magic, length, got_seq = CHUNK_HEAD.unpack_from(data, pos)
        if magic != CHUNK_MAGIC or length > MAX_CHUNK:
            raise ValueError(f"chunk {seq} is damaged")
        if got_seq != seq:
            raise ValueError(f"chunk {seq} is out of order")
        start = pos + CHUNK_HEAD.size
        end = start + length
        if end + HASH_LEN > len(data):
            if complete_only:
                return
            raise ValueError(f"chunk {seq} truncated")
        payload = data[start:end]
        digest = data[end : end + HASH_LEN]
        if chain(prev, seq, payload) != digest:
            raise ValueError(f"chunk {seq} was altered")
        yield Chunk(seq, base + pos, payload, digest)
        prev, pos, seq = digest, end + HASH_LEN, seq + 1


def iter_records_from(path: str, offset: int) -> Iterator[Record]:
    """Records from the chunk at ``offset`` (0: the first) on, reading only what is needed
    (no chain check: ``recorder.integrity`` verifies; this serves replay)."""
    with open(path, "rb") as f:
        if offset < len(MAGIC):
            if f.read(len(MAGIC)) != MAGIC:
                raise ValueError("not a Lockgate recording")
            offset = len(MAGIC)
        f.seek(offset)
        while True:
            head = f.read(CHUNK_HEAD.size)
            if len(head) < CHUNK_HEAD.size:
                return
            magic, length, _ = CHUNK_HEAD.unpack(head)
            if magic != CHUNK_MAGIC or length > MAX_CHUNK:
                raise ValueError("damaged chunk")
            payload = f.read(length)
            f.seek(HASH_LEN, 1)
            yield from decode_records(payload)


def records_after(path: str, offset: int, *, decode: bool = True) -> tuple[list[Record], int]:
    """The records of the complete chunks from ``offset`` on, and the offset after the last
    of them: for following a recording that another process is still writing (a chunk not
    yet wholly on disk waits for the next call). ``offset`` is 0 or an offset this returned,
    never an outside cursor. ``decode=False`` only finds the end."""
    records: list[Record] = []
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if offset < len(MAGIC):
            if size < len(MAGIC):
                return records, 0
            if f.read(len(MAGIC)) != MAGIC:
                raise ValueError("not a Lockgate recording")
            offset = len(MAGIC)
        while offset + CHUNK_HEAD.size <= size:
            f.seek(offset)
            magic, length, _ = CHUNK_HEAD.unpack(f.read(CHUNK_HEAD.size))
            if magic != CHUNK_MAGIC or length > MAX_CHUNK:
                raise ValueError("damaged chunk")
            end = offset + CHUNK_HEAD.size + length + HASH_LEN
            if end > size:
                break
            if decode:
                records.extend(decode_records(f.read(length)))
            offset = end
    return records, offset


def iter_chunks_at(path: str, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """``(file offset, payload)`` of each chunk whose header is at or after ``start``.

    The chunk headers are walked from the first one, so a ``start`` that is not a chunk
    boundary (an untrusted cursor) is never read as one: bytes inside a payload, such as a
    recorded request body, cannot pose as chunks. A truncated last chunk (a recording still
    being written) ends the iteration. No chain check: ``recorder.integrity`` verifies."""
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise ValueError("not a Lockgate recording")
        pos = len(MAGIC)
        while True:
            f.seek(pos)
            head = f.read(CHUNK_HEAD.size)
            if len(head) < CHUNK_HEAD.size:
                return
            magic, length, _ = CHUNK_HEAD.unpack(head)
            if magic != CHUNK_MAGIC or length > MAX_CHUNK:
                raise ValueError("damaged chunk")
            if pos >= start:
                payload = f.read(length)
                if len(payload) < length:
                    return
                yield pos, payload
            pos += CHUNK_HEAD.size + length + HASH_LEN
