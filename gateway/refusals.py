"""Refusals leave an audit trace, without letting an attacker flood the log.

Every refused connection (no grant, a lock, a channel the rule does not allow), refused
forward and refused action (self-approval, a role the person lacks) is audited as
``<what>.refused`` with its reason. Per (actor, action, client) at most ``BURST`` events are
written per ``WINDOW``; further ones are counted and the count rides on the next event that is
written (``details.suppressed``), so the log says how many were left out. Writing never raises:
the refusal itself has already been made; an event the database cannot take is owed
(``AuditLog.record_or_owe``) and written when it is back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gateway.audit import AuditLog

log = logging.getLogger(__name__)
BURST = 10
WINDOW = timedelta(minutes=1)
MAX_KEYS = 10_000


@dataclass
class _Bucket:
    start: datetime
    written: int = 0
    suppressed: int = 0


class RefusalLog:
    def __init__(self, audit: AuditLog, clock: Callable[[], datetime]) -> None:
        self.audit = audit
        self.clock = clock
        self._buckets: dict[tuple[str, str, str], _Bucket] = {}

    async def refused(
        self,
        *,
        actor: str,
        action: str,
        subject: str,
        reason: str,
        client: str = "",
        details: Mapping[str, Any] | None = None,
    ) -> bool:
        """Audit one refusal unless this key is over its rate; True if it was written."""
        now = self.clock()
        key = (actor[:64], action, client)
        bucket = self._buckets.get(key)
        if bucket is None or now - bucket.start >= WINDOW:
            carried = bucket.suppressed if bucket is not None else 0
            bucket = _Bucket(now, suppressed=carried)
            if len(self._buckets) >= MAX_KEYS:
                self._buckets.clear()
            self._buckets[key] = bucket
        if bucket.written >= BURST:
            bucket.suppressed += 1
            return False
        bucket.written += 1
        payload: dict[str, Any] = {"reason": reason[:500], **(details or {})}
        if client:
            payload["client"] = client
        if bucket.suppressed:
            payload["suppressed"] = bucket.suppressed
            bucket.suppressed = 0
        return await self.audit.record_or_owe(
            actor=actor[:64] or "?", action=action, subject=subject[:128], details=payload
        )
