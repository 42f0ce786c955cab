"""Verifying recordings: the chunk chain in the file, and the seal kept in the database."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from recorder.events import Kind, decode_records, read_chunks


@dataclass(frozen=True)
class FileCheck:
    ok: bool
    sealed: bool
    chunks: int
    chain_head: str
    sha256: str
    problem: str


def verify_bytes(data: bytes) -> FileCheck:
    sha = hashlib.sha256(data).hexdigest()
    chunks, head, sealed = 0, "", False
    try:
        for chunk in read_chunks(data):
            chunks += 1
            head = chunk.digest.hex()
            sealed = any(r.kind is Kind.SEAL for r in decode_records(chunk.payload))
    except ValueError as exc:
        return FileCheck(False, False, chunks, head, sha, str(exc))
    return FileCheck(True, sealed, chunks, head, sha, "ok" if sealed else "not sealed")


def verify_file(path: Path) -> FileCheck:
    return verify_bytes(path.read_bytes())


def verify_against_seal(check: FileCheck, sha256: str | None, chain_head: str | None) -> str | None:
    """None when the file matches its database seal, else what is wrong."""
    if not check.ok:
        return check.problem
    if sha256 is None or chain_head is None:
        return "the recording was never sealed"
    if not check.sealed:
        return "the seal record is missing (truncated)"
    if check.chain_head != chain_head:
        return "the chain head does not match the sealed one (truncated or rewritten)"
    if check.sha256 != sha256:
        return "the file's SHA-256 does not match the seal"
    return None
