"""The audit port policy writes through. The gateway provides the implementation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession


class AuditWriter(Protocol):
    async def append(
        self,
        db: AsyncSession,
        *,
        actor: str,
        action: str,
        subject: str,
        details: Mapping[str, Any] | None = None,
        access_changed: bool = False,
    ) -> None:
        """Add one event to the hash-chained audit log inside the caller's transaction.

        Called before the action's own writes are committed; if it raises, the caller's
        transaction rolls back and the action does not happen. ``details`` must never
        hold a secret. ``access_changed`` says the action narrows or moves someone's access
        (a revocation, lock, disabling, extension, new credential): live sessions must then
        be re-checked on every node, announced in the same transaction."""
