"""Where an anomaly hit or a SIEM signal becomes marker, audit, lock and terminate.

The one place that turns a finding into consequences, whatever its source or the session's
protocol. The order is fixed: the recording is marked, the audit log is written (if it
cannot be, the exception propagates and nothing else happens), locks are placed (a lock that
already exists is fine), then sessions end — the local one at once through the registry,
any other through the cluster, on whichever node holds it. Signals only take access away.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.audit import AuditLog
from gateway.sessions.records import SessionStore
from gateway.sessions.registry import SessionHandle, SessionRegistry
from policy.errors import Conflict, InvalidInput, InvalidTransition
from policy.models import LockKind
from policy.service import SYSTEM_ACTOR, PolicyService
from recorder.anomaly import AnomalyHit

log = logging.getLogger(__name__)


class Action(enum.StrEnum):
    ALERT = "alert"
    BLOCK = "block"
    KILL = "kill"
    KILL_AND_LOCK = "kill_and_lock"


SIGNAL_ACTIONS = (Action.ALERT, Action.KILL, Action.KILL_AND_LOCK)
_MARKERS = {Action.ALERT: "alert", Action.BLOCK: "block"}


@dataclass(frozen=True)
class SignalResult:
    action: str
    sessions: list[str]
    locked: list[str]


class Enforcer:
    def __init__(
        self,
        registry: SessionRegistry,
        store: SessionStore,
        policy: PolicyService,
        audit: AuditLog,
    ) -> None:
        self.registry = registry
        self.store = store
        self.policy = policy
        self.audit = audit

    async def anomaly(self, session: SessionHandle, hit: AnomalyHit) -> None:
        """An anomaly rule matched in ``session`` (a live session of this node): mark,
        audit ``anomaly.<action>``, lock the user for ``kill_and_lock``, end it for kills."""
        action = Action(hit.action)
        kill = action in (Action.KILL, Action.KILL_AND_LOCK)
        reason = f"anomaly rule {hit.rule}"
        with contextlib.suppress(Exception):  # a failed recording ends the session anyway
            session.mark(_MARKERS.get(action, "kill"), f"rule {hit.rule}")
        try:
            await self.audit.record(
                actor=session.user,
                action=f"anomaly.{action}",
                subject=session.id,
                details={"rule": hit.rule, "target": session.target},
            )
            if action is Action.KILL_AND_LOCK:
                await self._lock("user", [session.user], reason)
        except Exception:
            # No audit, no session: what cannot be accounted for does not go on.
            log.exception("session %s: acting on rule %s failed", session.id, hit.rule)
            kill, reason = True, "the audit log is unavailable"
        if kill:
            await self.registry.terminate(session.id, reason)

    async def signal(
        self,
        action: str,
        reason: str,
        *,
        session: str | None,
        user: str | None,
        target: str | None,
        source: str,
    ) -> SignalResult:
        """A verified SIEM signal: select live sessions by id, user and target (all given
        selectors must match), audit ``signal.<action>``, lock for ``kill_and_lock`` (the
        named user and target even with no live session), end the selected sessions."""
        if action not in SIGNAL_ACTIONS:
            raise InvalidInput(f"action must be one of {', '.join(SIGNAL_ACTIONS)}")
        if not (session or user or target):
            raise InvalidInput("select sessions by session, user or target")
        chosen_action = Action(action)
        reason = " ".join(reason.split())[:200] or "no reason given"
        live = await self.store.list(SYSTEM_ACTOR, active_only=True)
        chosen = [
            s
            for s in live
            if (session is None or s.id == session)
            and (user is None or s.user == user)
            and (target is None or s.target == target)
        ]
        text = f"signal from {source}: {reason}"
        await self.audit.record(
            actor=f"signal:{source}",
            action=f"signal.{action}",
            subject=session or user or target or "",
            details={"reason": reason, "sessions": [s.id for s in chosen]},
        )
        locked: list[str] = []
        if chosen_action is Action.KILL_AND_LOCK:
            users = sorted({s.user for s in chosen} | ({user} if user else set()))
            locked += await self._lock("user", users, text)
            if target:
                locked += await self._lock("target", [target], text)
        if chosen_action is not Action.ALERT:
            for record in chosen:
                with contextlib.suppress(InvalidTransition):  # it ended meanwhile
                    await self.store.terminate(SYSTEM_ACTOR, record.id, text)
        return SignalResult(action, [s.id for s in chosen], locked)

    async def _lock(self, kind: LockKind, names: Iterable[str], reason: str) -> list[str]:
        done = []
        for name in names:
            with contextlib.suppress(Conflict):  # already locked
                await self.policy.lock(SYSTEM_ACTOR, kind, name, reason)
            done.append(f"{kind}:{name}")
        return done
