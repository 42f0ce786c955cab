"""Master keys: where they come from, their ids, and the keyring used for rotation.

A key source is ``file:PATH`` (the file must be a regular file that neither group nor
others can read or write), ``env:VARIABLE``, or ``<scheme>:...`` for a registered key
provider (a KMS plug-in). Both built-in sources hold one key per line as
``lgmk1:<key id>:<base64 of 32 bytes>``; the first line is the current key, later lines are
retired keys still accepted for unwrapping (used only while a rotation is in progress).
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vault.errors import MasterKeyError

PREFIX = "lgmk1"
KEY_BYTES = 32


@dataclass(frozen=True)
class MasterKey:
    key_id: str
    key: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r}, key=***)"


@dataclass(frozen=True)
class Keyring:
    current: MasterKey
    retired: tuple[MasterKey, ...] = ()

    def get(self, key_id: str) -> MasterKey:
        for key in (self.current, *self.retired):
            if key.key_id == key_id:
                return key
        raise MasterKeyError(f"master key {key_id} is not available")

    def serialize(self) -> str:
        return "".join(
            f"{PREFIX}:{k.key_id}:{base64.b64encode(k.key).decode()}\n"
            for k in (self.current, *self.retired)
        )


def new_master_key() -> MasterKey:
    return MasterKey(secrets.token_hex(4), secrets.token_bytes(KEY_BYTES))


def parse_keyring(text: str, source: str) -> Keyring:
    keys: list[MasterKey] = []
    for number, line in enumerate(text.replace(",", "\n").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        try:
            if len(parts) != 3 or parts[0] != PREFIX or not parts[1]:
                raise ValueError
            key = base64.b64decode(parts[2], validate=True)
        except (ValueError, binascii.Error):
            raise MasterKeyError(f"{source}: line {number} is not a Lockgate master key") from None
        if len(key) != KEY_BYTES:
            raise MasterKeyError(f"{source}: line {number}: a master key has {KEY_BYTES} bytes")
        keys.append(MasterKey(parts[1], key))
    if not keys:
        raise MasterKeyError(f"{source}: no master key")
    return Keyring(keys[0], tuple(keys[1:]))


def _check_file(path: Path) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise MasterKeyError(f"master key file {path} does not exist") from None
    except OSError as exc:
        raise MasterKeyError(f"master key file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise MasterKeyError(f"master key file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise MasterKeyError(
            f"master key file {path} is accessible by group or others; run: chmod 600 {path}"
        )


KeyProvider = Callable[[str], Keyring]
_providers: dict[str, KeyProvider] = {}


def register_key_provider(scheme: str, provider: KeyProvider) -> None:
    """Make ``<scheme>:REST`` master-key specs resolve through ``provider(REST)``."""
    if scheme in ("file", "env"):
        raise ValueError(f"{scheme} is built in")
    _providers[scheme] = provider


def load_keyring(spec: str) -> Keyring:
    scheme, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise MasterKeyError("master key source must be file:PATH, env:VARIABLE or a provider")
    if scheme == "file":
        path = Path(rest)
        _check_file(path)
        try:
            return parse_keyring(path.read_text(), str(path))
        except (OSError, UnicodeDecodeError):
            raise MasterKeyError(f"master key file {path} cannot be read") from None
    if scheme == "env":
        value = os.environ.get(rest)
        if not value:
            raise MasterKeyError(f"environment variable {rest} is not set")
        return parse_keyring(value, f"environment variable {rest}")
    if scheme in _providers:
        return _providers[scheme](rest)
    raise MasterKeyError(f"no key provider for {scheme}:")


class KeyringSource:
    """A key source that running nodes re-read: ``load`` once at start; ``changed`` tells
    (cheaply, by the file's identity, size and mtime) that a ``file:`` keyring was replaced,
    as ``lockgate vault rotate`` does; ``load`` again picks the new keys up. Sources other
    than files are re-read on demand (when a key id is unknown)."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._stamp: tuple[int, int, int] | None = None

    def _file_stamp(self) -> tuple[int, int, int] | None:
        scheme, _, rest = self.spec.partition(":")
        if scheme != "file":
            return None
        try:
            info = os.stat(rest)
        except OSError:
            return None
        return (info.st_ino, info.st_size, info.st_mtime_ns)

    def load(self) -> Keyring:
        stamp = self._file_stamp()
        keyring = load_keyring(self.spec)
        self._stamp = stamp
        return keyring

    def changed(self) -> bool:
        stamp = self._file_stamp()
        return stamp is not None and stamp != self._stamp


def write_keyring_file(path: Path, keyring: Keyring, *, exclusive: bool = False) -> None:
    """Write atomically with mode 0600 (``exclusive``: refuse to replace an existing file)."""
    if exclusive and path.exists():
        raise MasterKeyError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(keyring.serialize())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def generate_master_key_file(path: Path) -> Keyring:
    keyring = Keyring(new_master_key())
    write_keyring_file(path, keyring, exclusive=True)
    return keyring
