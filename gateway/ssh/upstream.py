"""The gateway's own SSH connection to a target.

The target's pinned host key is the only key trusted: the connection is refused before any
credential is sent if the target shows another one, and a target without a pinned key is
never contacted (no trust on first use). TCP, key exchange and the host-key check start as
soon as the grant check passed; the vaulted credential is checked out and used only once a
channel has been authorized, so a refused session never authenticates to the target. The
gateway picks AES-GCM for this leg: it costs about half of chacha20-poly1305 per packet here
(see PERF-NOTES).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh

from gateway.credentials import UpstreamCredential
from gateway.errors import (
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamHostKeyMismatch,
    UpstreamUnreachable,
)
from policy.models import Target

UPSTREAM_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
CONNECT_TIMEOUT = 15.0
# The whole log-in, including the wait for the first authorized channel (a `ssh -N -L` may
# wait long); a target's own LoginGraceTime may end it sooner, and the session reconnects.
LOGIN_TIMEOUT = 600.0


CredentialSource = Callable[[], Awaitable[UpstreamCredential]]


class _Credential:
    """The vaulted credential, fetched the first time the target asks for it (and only
    then: the source waits until a channel has been authorized). A failure to get it is kept
    to be raised instead of the target's refusal that follows."""

    def __init__(self, source: CredentialSource) -> None:
        self.source = source
        self.value: UpstreamCredential | None = None
        self.error: BaseException | None = None
        self.used = False

    async def get(self) -> UpstreamCredential | None:
        if self.value is None and self.error is None:
            try:
                self.value = await self.source()
            except Exception as exc:
                self.error = exc
        self.used = True
        return self.value

    async def password(self) -> str | None:
        cred = await self.get()
        return cred.password.reveal_text() if cred is not None and cred.password else None


class _DeferredKeyClient(asyncssh.SSHClient):
    def __init__(self, credential: _Credential) -> None:
        self.credential = credential
        self.offered = False

    async def public_key_auth_requested(self) -> Any:
        """The vaulted key (with its certificate), once; None ends public-key auth."""
        if self.offered:
            return None
        self.offered = True
        cred = await self.credential.get()
        if cred is None or cred.key is None:
            return None
        return [(cred.key, cred.certificate)] if cred.certificate is not None else [cred.key]


async def connect_upstream(
    target: Target, username: str, kind: str | None, credential: CredentialSource
) -> asyncssh.SSHClientConnection:
    """Connect and verify the pinned host key at once; authenticate as ``username`` with
    the credential of ``kind`` (``password``, ``private_key``, ``ssh_ca``) only when
    ``credential`` yields it. A refused session whose ``credential`` never yields leaves the
    target an unauthenticated connection, closed when the session ends."""
    if not target.host_key:
        raise UpstreamError(
            f"target {target.name} has no pinned host key; pin one with "
            f"'lockgate target add --host-key' or '--scan'"
        )
    pinned = asyncssh.import_public_key(target.host_key)
    held = _Credential(credential)
    options: dict[str, object] = {"client_keys": None}
    if kind == "password":
        options.update(password=held.password, preferred_auth="password,keyboard-interactive")
    else:
        options.update(client_factory=lambda: _DeferredKeyClient(held), preferred_auth="publickey")
    try:
        return await asyncssh.connect(
            target.host or "",
            target.port,
            username=username,
            known_hosts=([pinned], [], []),
            config=None,
            agent_path=None,
            agent_forwarding=False,
            x11_forwarding=False,
            encryption_algs=list(UPSTREAM_CIPHERS),
            connect_timeout=CONNECT_TIMEOUT,
            login_timeout=LOGIN_TIMEOUT,
            keepalive_interval=30,
            keepalive_count_max=3,
            **options,
        )
    except asyncssh.HostKeyNotVerifiable:
        raise UpstreamHostKeyMismatch(
            f"host key of {target.name} does not match the pinned key; refusing to connect"
        ) from None
    except asyncssh.PermissionDenied:
        if held.error is not None:
            raise held.error from None
        raise UpstreamAuthFailed(
            f"{target.name} refused the vaulted credential for {username}"
        ) from None
    except (OSError, TimeoutError, asyncssh.Error) as exc:
        raise UpstreamUnreachable(f"cannot reach {target.name} ({type(exc).__name__})") from None
