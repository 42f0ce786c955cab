"""The gateway's own errors: one root, one class per reason.

Each message is written for the person or operator who sees it and never holds a secret.
The edges translate them once: the SSH edge into a one-line ``lockgate:`` refusal, the HTTP
middleware (``gateway.web.problems``) into a problem document, the CLI into an exit status.
"""

from __future__ import annotations

# Errors that mean "the database (or the network to it) is unavailable right now": answered
# as 503, never 500. gateway.db adds its driver's errors when it is imported.
UNAVAILABLE: list[type[BaseException]] = [ConnectionError, TimeoutError]


class GatewayError(Exception):
    """Root of the gateway's errors. ``str()`` is safe to show."""


class StartupError(GatewayError):
    """The node cannot serve: the database, the vault key, the audit log or a listener is
    missing. Start-up fails closed with this one line."""


class ConfigError(GatewayError):
    """The configuration is invalid. The message names the source and key."""


class AuditError(GatewayError):
    """The audit log could not be written; the action it guarded did not happen."""


class LoginError(GatewayError, ValueError):
    """An SSH login name does not follow the grammar."""


class LoginBusy(GatewayError):
    """Too many password checks are running or waiting; the attempt was not judged (it is
    not a failed login)."""


class UpstreamError(GatewayError):
    """The target could not be reached, or refused the gateway."""


class UpstreamUnreachable(UpstreamError):
    """The target could not be reached, or the connection to it was lost."""


class UpstreamHostKeyMismatch(UpstreamError):
    """The target showed another host key than the pinned one; nothing was sent to it."""


class UpstreamAuthFailed(UpstreamError):
    """The target refused the vaulted credential (stale or revoked on the target)."""


class UpstreamRefused(UpstreamError):
    """No usable credential or pinned host key for the target; nothing was sent to it."""


def end_reason(exc: BaseException) -> str:
    """A session's end reason for an upstream failure (short, for records and metrics)."""
    if isinstance(exc, UpstreamHostKeyMismatch):
        return "target host key mismatch"
    if isinstance(exc, UpstreamAuthFailed):
        return "target refused the vaulted credential"
    if isinstance(exc, UpstreamRefused):
        return "no usable credential"
    return "target unreachable"


class SignalRejected(GatewayError):
    """A SIEM signal's timestamp or signature does not verify (HTTP 401)."""


class SignalReplayed(GatewayError):
    """A SIEM signal that was already accepted, on this or another node (HTTP 409)."""


class SignalsNotConfigured(GatewayError):
    """No signal secret is stored in the vault (HTTP 503)."""
