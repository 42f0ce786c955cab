"""The gateway's own SSH connection to a target.

The target's pinned host key is the only key trusted: the connection is refused before any
credential is sent if the target shows another one, and a target without a pinned key is
never contacted (no trust on first use). The gateway picks AES-GCM for this leg: it costs
about half of chacha20-poly1305 per packet here (see PERF-NOTES).
"""

from __future__ import annotations

import asyncssh

from gateway.credentials import UpstreamCredential
from gateway.errors import UpstreamError
from policy.models import Target

UPSTREAM_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
CONNECT_TIMEOUT = 15.0


async def connect_upstream(
    target: Target, cred: UpstreamCredential
) -> asyncssh.SSHClientConnection:
    if not target.host_key:
        raise UpstreamError(
            f"target {target.name} has no pinned host key; pin one with "
            f"'lockgate target add --host-key' or '--scan'"
        )
    pinned = asyncssh.import_public_key(target.host_key)
    options: dict[str, object] = {}
    if cred.password is not None:
        options.update(
            password=cred.password.reveal_text(),
            client_keys=None,
            preferred_auth="password,keyboard-interactive",
        )
    elif cred.certificate is not None and cred.key is not None:
        options.update(client_keys=[(cred.key, cred.certificate)], preferred_auth="publickey")
    elif cred.key is not None:
        options.update(client_keys=[cred.key], preferred_auth="publickey")
    try:
        return await asyncssh.connect(
            target.host or "",
            target.port,
            username=cred.username,
            known_hosts=([pinned], [], []),
            config=None,
            agent_path=None,
            agent_forwarding=False,
            x11_forwarding=False,
            encryption_algs=list(UPSTREAM_CIPHERS),
            connect_timeout=CONNECT_TIMEOUT,
            login_timeout=CONNECT_TIMEOUT,
            keepalive_interval=30,
            keepalive_count_max=3,
            **options,
        )
    except asyncssh.HostKeyNotVerifiable:
        raise UpstreamError(
            f"host key of {target.name} does not match the pinned key; refusing to connect"
        ) from None
    except asyncssh.PermissionDenied:
        raise UpstreamError(
            f"{target.name} refused the vaulted credential for {cred.username}"
        ) from None
    except (OSError, TimeoutError, asyncssh.Error) as exc:
        raise UpstreamError(f"cannot reach {target.name} ({type(exc).__name__})") from None
