"""The registry of live sessions on this node and the one way to end them.

Every trigger (expiry, revocation, lock, admin terminate, anomaly rule, SIEM signal,
shutdown, recording failure) calls ``terminate(session_id, reason)``: the person's terminal
gets ``[lockgate] session terminated: <reason>``, both connections close, the recording gets
a kill marker and is sealed, and the session's record and the audit log say why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

log = logging.getLogger(__name__)


class SessionHandle(Protocol):
    """What the registry needs from a protocol's live session."""

    id: str
    kind: str  # ssh | http
    user: str
    target: str
    account: str
    grant_id: str | None
    expires_at: datetime | None

    def notify(self, line: str) -> None:
        """Show one line to the person (their terminal; a web session's next page)."""

    def mark(self, kind: str, text: str) -> None:
        """Add a marker (alert, block, kill, warning) to the session's recording."""

    async def close(self, reason: str) -> None:
        """Tell the person why, close both legs (cutting what is in flight), seal the
        recording, record the end."""


@dataclass
class SessionRegistry:
    sessions: dict[str, SessionHandle] = field(default_factory=dict)
    on_change: list[Callable[[SessionHandle, bool], Awaitable[None] | None]] = field(
        default_factory=list
    )
    _closing: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def add(self, session: SessionHandle) -> None:
        self.sessions[session.id] = session
        for callback in self.on_change:
            callback(session, True)

    def discard(self, session: SessionHandle) -> None:
        if self.sessions.pop(session.id, None) is not None:
            for callback in self.on_change:
                callback(session, False)

    def get(self, session_id: str) -> SessionHandle | None:
        return self.sessions.get(session_id)

    def __len__(self) -> int:
        return len(self.sessions)

    async def terminate(self, session_id: str, reason: str) -> bool:
        """End a live session held by this node; False if it is not here. Idempotent:
        concurrent triggers share one close."""
        session = self.sessions.get(session_id)
        if session is None:
            return False
        task = self._closing.get(session_id)
        if task is None:
            task = asyncio.ensure_future(self._close(session, reason))
            self._closing[session_id] = task
        await asyncio.shield(task)
        return True

    async def _close(self, session: SessionHandle, reason: str) -> None:
        try:
            await session.close(reason)
        except Exception:
            log.exception("closing session %s failed", session.id)
        finally:
            self.discard(session)
            self._closing.pop(session.id, None)

    async def terminate_all(self, reason: str) -> None:
        await asyncio.gather(*(self.terminate(sid, reason) for sid in list(self.sessions)))

    def matching(
        self, *, user: str | None = None, target: str | None = None, grant_id: str | None = None
    ) -> list[SessionHandle]:
        return [
            s
            for s in self.sessions.values()
            if (user is None or s.user == user)
            and (target is None or s.target == target)
            and (grant_id is None or s.grant_id == grant_id)
        ]
