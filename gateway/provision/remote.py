"""Running provisioning steps on a target over SSH with its provisioner key.

The target's pinned host key is the only key trusted (as for sessions); a target without one
is never contacted. A step's output is kept short in errors and never includes its stdin
(a public key or a drop-in, but the rule is simple: stdin is not echoed anywhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.provision.steps import Step
from policy.models import Target

if TYPE_CHECKING:
    import asyncssh

CONNECT_TIMEOUT = 15.0
STEP_TIMEOUT = 60.0


class ProvisionError(Exception):
    """A provisioning step did not succeed. ``retry`` is False when trying again cannot
    help (the home path is taken, a group does not exist, a name is in use)."""

    def __init__(self, message: str, *, retry: bool = True, status: int | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.status = status


@dataclass(frozen=True)
class StepResult:
    status: int
    stdout: str


class TargetShell:
    """An open provisioning connection to one target."""

    def __init__(self, target: Target, conn: asyncssh.SSHClientConnection) -> None:
        self.target = target
        self.conn = conn

    async def run(self, step: Step) -> StepResult:
        """Run one step; raise ProvisionError unless its status is ``ok`` or ``gone``."""
        import asyncssh  # not at the top: every `lockgate` command imports this module

        try:
            done = await self.conn.run(
                step.command,
                input=step.stdin.decode() if step.stdin is not None else None,
                check=False,
                timeout=STEP_TIMEOUT,
            )
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise ProvisionError(
                f"{self.target.name}: {step.what}: connection lost ({type(exc).__name__})"
            ) from None
        status = done.exit_status if done.exit_status is not None else 255
        if status in step.ok or status in step.gone:
            return StepResult(status, str(done.stdout or ""))
        err = " ".join(str(done.stderr or "").split())[:200]
        raise ProvisionError(
            f"{self.target.name}: {step.what} failed (exit {status}){': ' + err if err else ''}",
            status=status,
        )

    async def run_all(self, steps: Sequence[Step]) -> None:
        for step in steps:
            await self.run(step)

    def close(self) -> None:
        self.conn.close()


async def open_shell(target: Target, login: str, key: asyncssh.SSHKey) -> TargetShell:
    """Connect as the provisioner; unreachable or refusing targets raise a retryable
    ProvisionError (the caller backs off and tries again)."""
    import asyncssh

    if not target.host_key or not target.host:
        raise ProvisionError(f"target {target.name} has no pinned host key", retry=True)
    try:
        conn = await asyncssh.connect(
            target.host,
            target.port,
            username=login,
            client_keys=[key],
            known_hosts=([asyncssh.import_public_key(target.host_key)], [], []),
            config=None,
            agent_path=None,
            agent_forwarding=False,
            x11_forwarding=False,
            preferred_auth="publickey",
            connect_timeout=CONNECT_TIMEOUT,
            login_timeout=CONNECT_TIMEOUT,
        )
    except asyncssh.HostKeyNotVerifiable:
        raise ProvisionError(f"host key of {target.name} does not match the pinned key") from None
    except asyncssh.PermissionDenied:
        raise ProvisionError(f"{target.name} refused the provisioner key for {login}") from None
    except (OSError, TimeoutError, asyncssh.Error) as exc:
        raise ProvisionError(f"cannot reach {target.name} ({type(exc).__name__})") from None
    return TargetShell(target, conn)
