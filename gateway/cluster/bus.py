"""Events between gateway nodes: kills, revocations, locks, ended web-target sign-ins.

An event is a row in ``gw_cluster_events`` written in the same transaction as the change it
announces. Every node follows the table: on PostgreSQL a ``NOTIFY`` wakes the followers at
once (with a slow poll as a backstop); on SQLite, where several processes share one file,
a commit rings the followers' doorbells (``gateway.cluster.doorbell``) and a short poll is
the backstop.
Handlers get every event exactly once per node, including the node's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from gateway.cluster import doorbell
from gateway.db import SessionMaker
from gateway.db.tables import cluster_events
from policy.models import Clock, utcnow

log = logging.getLogger(__name__)
CHANNEL = "lockgate_events"
# Out-of-order commits on PostgreSQL can make a lower id visible after a higher one; the
# follower therefore re-reads a trailing window and remembers what it has delivered.
_WINDOW = timedelta(minutes=2)
_RING = "lockgate.doorbell"
LISTEN_TIMEOUT = 10.0  # seconds to open the LISTEN connection
LISTEN_RETRY = 1.0  # seconds between attempts to re-open it
LOST_POLL = 0.2  # seconds between polls while it is down


class EventKind(enum.StrEnum):
    TERMINATE = "terminate"  # end one session, wherever it is: {session, reason, by}
    RECHECK = "recheck"  # access changed: every node re-decides its live sessions
    # web-target sign-ins ended (their session was terminated): {user, target, account,
    # grant, reason}; every node refuses their cookies and ends its own sessions for them
    LOGINS_ENDED = "logins_ended"


@dataclass(frozen=True)
class ClusterEvent:
    id: int
    at: datetime
    origin: str
    kind: str  # an EventKind value; unknown kinds (from a newer node) are ignored
    payload: Mapping[str, Any]


Handler = Callable[[ClusterEvent], Awaitable[None]]


async def publish_terminate(
    db: AsyncSession, origin: str, session: str, reason: str, by: str, now: datetime
) -> None:
    """Ask, inside ``db``'s transaction, for one session to end on whichever node holds it."""
    payload = {"session": session, "reason": reason, "by": by}
    await publish(db, origin, EventKind.TERMINATE, payload, now)


async def publish_recheck(
    db: AsyncSession, origin: str, action: str, subject: str, now: datetime
) -> None:
    """Announce, inside ``db``'s transaction, that someone's access changed (``action`` on
    ``subject``): every node re-decides its live sessions when this commits."""
    await publish(db, origin, EventKind.RECHECK, {"action": action, "subject": subject}, now)


async def publish(
    db: AsyncSession, origin: str, kind: EventKind, payload: Mapping[str, Any], now: datetime
) -> None:
    """Add an event inside ``db``'s transaction; it is delivered when that commits."""
    result = await db.execute(
        cluster_events.insert().values(
            at=now, origin=origin, kind=kind, payload=json.dumps(dict(payload), sort_keys=True)
        )
    )
    bind = db.get_bind()
    if bind.dialect.name == "postgresql":
        key = getattr(result, "inserted_primary_key", None)
        event_id = key[0] if key else ""
        await db.execute(sa.select(sa.func.pg_notify(CHANNEL, str(event_id))))
    elif (directory := doorbell.directory_for(bind.engine.url)) is not None:
        db.sync_session.info[_RING] = directory


@sa.event.listens_for(Session, "after_commit")
def _ring_after_commit(session: Session) -> None:
    # Ring only once the event is visible: a follower woken before the commit would miss it.
    directory = session.info.pop(_RING, None)
    if directory is not None:
        doorbell.ring(directory)


class ClusterBus:
    def __init__(
        self,
        maker: SessionMaker,
        node: str,
        *,
        poll_interval: float = 0.1,
        clock: Clock = utcnow,
        on_listen_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self.maker = maker
        self.node = node
        self.clock = clock
        self.poll_interval = poll_interval
        self._handlers: list[Handler] = []
        self._seen: dict[int, datetime] = {}
        self._since: datetime | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: Any = None
        self._doorbell: doorbell.Doorbell | None = None
        self._stopping = False
        self._listen_lost = False
        self._poll_failing = False
        self._next_listen_try = 0.0
        self.listen_reconnects = 0
        self.on_listen_reconnect = on_listen_reconnect

    def subscribe(self, handler: Handler) -> None:
        self._handlers.append(handler)

    async def send(self, kind: EventKind, payload: Mapping[str, Any]) -> None:
        """Publish an event in a transaction of its own."""
        async with self.maker() as db, db.begin():
            await publish(db, self.node, kind, payload, self.clock())

    async def start(self) -> None:
        self._stopping = False
        # Only events from now on matter: older kills concern sessions that no longer exist.
        self._since = self.clock().astimezone(UTC) - timedelta(seconds=1)
        dialect = self.maker.kw["bind"].dialect.name
        if dialect == "postgresql":
            await self._listen()
            self.poll_interval = max(self.poll_interval, 2.0)
        elif (directory := doorbell.directory_for(self.maker.kw["bind"].url)) is not None:
            bell = doorbell.Doorbell(directory)
            try:
                bell.listen(self._wake.set)
                self._doorbell = bell
                self.poll_interval = max(self.poll_interval, 1.0)
            except OSError as exc:
                log.warning(
                    "cluster: no doorbell (%s); polling every %.2fs", exc, self.poll_interval
                )
        # Caught up before start() returns: whatever is published afterwards needs a wake-up
        # (or the backstop poll) to arrive, never the follower's first read.
        await self._poll_logged()
        self._task = asyncio.create_task(self._run(), name="cluster-follower")

    async def _listen(self) -> None:
        import asyncpg

        url = make_url(self.maker.kw["bind"].url).set(drivername="postgresql")
        listener = await asyncpg.connect(
            url.render_as_string(hide_password=False), timeout=LISTEN_TIMEOUT
        )
        await listener.add_listener(CHANNEL, lambda *_: self._wake.set())
        listener.add_termination_listener(self._listener_lost)
        self._listener = listener

    def _listener_lost(self, _: Any) -> None:
        """The LISTEN connection died (a database restart, a network cut): poll quickly and
        open it again from the follower's loop."""
        if self._stopping:
            return
        if not self._listen_lost:
            log.warning("cluster: the LISTEN connection was lost; polling until it is back")
        self._listen_lost = True
        self._wake.set()

    async def _keep_listening(self) -> None:
        listener = self._listener
        if listener is not None and not listener.is_closed() and not self._listen_lost:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_listen_try:
            return
        self._next_listen_try = loop.time() + LISTEN_RETRY
        if listener is not None:
            with contextlib.suppress(Exception):
                listener.terminate()
            self._listener = None
        self._listen_lost = True
        try:
            await self._listen()
        except Exception as exc:
            log.info("cluster: re-opening the LISTEN connection failed (%s)", type(exc).__name__)
            return
        self._listen_lost = False
        self.listen_reconnects += 1
        log.warning("cluster: the LISTEN connection is open again")
        if self.on_listen_reconnect is not None:
            self.on_listen_reconnect()

    async def stop(self) -> None:
        # A flag and a wake-up, not cancel(): on Python 3.11 a cancellation racing with the
        # NOTIFY wake-up could be swallowed by wait_for and the follower never stopped.
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        if self._doorbell is not None:
            self._doorbell.close()
            self._doorbell = None

    async def _run(self) -> None:
        postgres = self.maker.kw["bind"].dialect.name == "postgresql"
        while not self._stopping:
            interval = LOST_POLL if self._listen_lost else self.poll_interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                break
            if postgres:
                await self._keep_listening()
            await self._poll_logged()

    async def _poll_logged(self) -> None:
        """One poll; a failure is logged once until a poll succeeds again (an outage polls
        several times a second)."""
        try:
            await self.poll_once()
        except Exception as exc:
            if not self._poll_failing:
                log.warning("cluster: reading events failed (%s); retrying", type(exc).__name__)
            self._poll_failing = True
            return
        if self._poll_failing:
            log.warning("cluster: reading events works again")
        self._poll_failing = False

    async def poll_once(self) -> int:
        """Deliver events not yet seen; returns how many were delivered."""
        assert self._since is not None, "start() first"
        now = self.clock().astimezone(UTC)
        floor = max(self._since, now - _WINDOW)
        async with self.maker() as db:
            rows = (
                await db.execute(
                    sa.select(cluster_events)
                    .where(cluster_events.c.at >= floor)
                    .order_by(cluster_events.c.id)
                )
            ).all()
        delivered = 0
        for row in rows:
            if row.id in self._seen:
                continue
            at = row.at.replace(tzinfo=UTC) if row.at.tzinfo is None else row.at
            self._seen[row.id] = at
            event = ClusterEvent(row.id, at, row.origin, row.kind, json.loads(row.payload))
            for handler in self._handlers:
                try:
                    await handler(event)
                except Exception:
                    log.exception("cluster: handler failed for event %s", row.id)
            delivered += 1
        for event_id, at in list(self._seen.items()):
            if at < floor:
                del self._seen[event_id]
        return delivered
