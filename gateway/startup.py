"""What a node checks and sets before it starts: its file limit, its host key, a writable
recordings directory."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import asyncssh

from gateway.config import Config
from gateway.errors import StartupError


def raise_fd_limit() -> None:
    """Each session holds a client socket, an upstream socket and a recording file."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def load_host_keys(config: Config) -> list[asyncssh.SSHKey]:
    path = config.host_key_path
    try:
        return [asyncssh.read_private_key(path)]
    except (OSError, asyncssh.KeyImportError):
        raise StartupError(f"no usable SSH host key at {path}; run: lockgate init") from None


def check_recordings(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{socket.gethostname()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StartupError(
            f"recordings directory {path} is not writable ({exc.strerror})"
        ) from None
