"""Node liveness: a heartbeat row per node, and what happens to a node that falls silent.

Every node (each worker process of a ``lockgate serve`` is one) writes its row in
``gw_nodes`` every ``server.heartbeat_interval`` seconds. On each beat it also looks at the
others: a node silent for longer than ``server.node_lost_after`` (by its heartbeat's time, and
watched that long without a beat on this node's monotonic clock; not stopped cleanly) is
declared lost by the first node to claim it (an update that only one node can win). In the
claim's transaction its sessions are marked ended and each end audited, with the reason
``worker lost`` when it is a worker whose siblings still beat (its serve process is alive
and restarts it), else ``node lost``; then their recordings are sealed as interrupted.
A node that finds itself declared lost while it still runs (it could not reach the database
for that long) ends what it still holds: the records already say it ended.

``ready`` is the readiness of a serve process as a whole: every one of its workers beats.
Decisions are pure functions of rows and ``now`` (``silent``, ``workers_ready``); the clock
is the node's policy clock, so tests move it by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from gateway.audit import AuditLog
from gateway.db import SessionMaker
from gateway.db.tables import nodes, sessions
from gateway.sessions.records import NODE_LOST, WORKER_LOST, SessionStore
from policy.models import Clock

log = logging.getLogger(__name__)

OnLost = Callable[[list[str], str], Awaitable[None]]  # session ids, reason


@dataclass(frozen=True)
class NodeRow:
    name: str
    parent: str
    host: str
    pid: int
    workers: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None = None
    lost_at: datetime | None = None
    lost_by: str | None = None
    lost_reason: str | None = None
    sessions: int = 0  # live sessions the database says it holds
    host_key: str | None = None
    assertion_kid: str | None = None

    def fresh(self, now: datetime, after: timedelta) -> bool:
        return self.stopped_at is None and self.lost_at is None and now - self.heartbeat_at <= after

    @property
    def state(self) -> str:
        if self.lost_at is not None:
            return "lost"
        return "stopped" if self.stopped_at is not None else "live"

    def public(self, now: datetime, after: timedelta) -> dict[str, Any]:
        silent = self.state == "live" and not self.fresh(now, after)
        return {
            "name": self.name,
            "parent": self.parent,
            "host": self.host,
            "pid": self.pid,
            "state": "silent" if silent else self.state,
            "sessions": self.sessions,
            "started_at": self.started_at,
            "heartbeat_at": self.heartbeat_at,
            "stopped_at": self.stopped_at,
            "lost_at": self.lost_at,
            "lost_by": self.lost_by,
            "lost_reason": self.lost_reason,
        }


def silent(
    rows: Iterable[NodeRow], me: str, now: datetime, after: timedelta
) -> list[tuple[NodeRow, str]]:
    """The nodes to declare lost, each with its sessions' end reason: silent for longer
    than ``after``, neither stopped nor already lost, not ``me``."""
    rows = list(rows)
    found = []
    for row in rows:
        if row.name == me or row.stopped_at is not None or row.lost_at is not None:
            continue
        if now - row.heartbeat_at <= after:
            continue
        # A sibling proves its serve process alive only if it beat well after this one fell
        # silent: workers of a node that died together stopped within one interval of each
        # other (node_lost_after is at least three intervals, so half of it separates them).
        siblings = [
            r
            for r in rows
            if r.parent == row.parent
            and r.name != row.name
            and r.fresh(now, after)
            and r.heartbeat_at - row.heartbeat_at > after / 2
        ]
        worker = row.parent != row.name and bool(siblings)
        found.append((row, WORKER_LOST if worker else NODE_LOST))
    return found


def unshared_keys(rows: Iterable[NodeRow], me: NodeRow, now: datetime, after: timedelta) -> str:
    """What the live nodes do not share with ``me`` ("" when all agree): behind a load
    balancer a person's ``ssh`` meets whichever node's host key (a changed key is what a
    man in the middle looks like), and an app checks assertions against whichever node's
    JWKS."""
    problems = []
    for what, key in (("SSH host key", "host_key"), ("assertion key", "assertion_kid")):
        mine = getattr(me, key)
        others = sorted(
            r.name
            for r in rows
            if r.name != me.name and r.fresh(now, after) and getattr(r, key) not in (None, mine)
        )
        if mine and others:
            problems.append(f"{', '.join(others)} {'has' if len(others) == 1 else 'have'} "
                            f"another {what} than {me.name}")  # fmt: skip
    return "; ".join(problems)


def workers_ready(
    rows: Iterable[NodeRow], parent: str, workers: int, now: datetime, after: timedelta
) -> bool:
    """Whether every worker ``<parent>-w<i>`` of a serve process beats."""
    by_name = {r.name: r for r in rows}
    names = [worker_name(parent, i) for i in range(workers)] if workers > 1 else [parent]
    return all(n in by_name and by_name[n].fresh(now, after) for n in names)


def worker_name(parent: str, index: int) -> str:
    return f"{parent}-w{index}"


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _row(r: Any, counts: dict[str, int]) -> NodeRow:
    return NodeRow(
        name=r.name,
        parent=r.parent,
        host=r.host,
        pid=r.pid,
        workers=r.workers,
        started_at=_utc(r.started_at) or r.started_at,
        heartbeat_at=_utc(r.heartbeat_at) or r.heartbeat_at,
        stopped_at=_utc(r.stopped_at),
        lost_at=_utc(r.lost_at),
        lost_by=r.lost_by,
        lost_reason=r.lost_reason,
        sessions=counts.get(r.name, 0),
        host_key=r.host_key,
        assertion_kid=r.assertion_kid,
    )


@dataclass
class Liveness:
    """One node's heartbeat, and its watch over the others (see the module doc)."""

    maker: SessionMaker
    sessions: SessionStore
    audit: AuditLog
    name: str
    clock: Clock
    parent: str = ""  # the serve process's node name ("" = this node runs alone)
    workers: int = 1
    host: str = ""
    pid: int = 0
    host_key: str | None = None  # fingerprint; with assertion_kid, what the cluster shares
    assertion_kid: str | None = None
    keys_warning: str = ""  # what the last look found unshared ("" = nothing)
    interval: float = 5.0
    lost_after: float = 30.0
    on_lost: OnLost | None = None  # seal the recordings of sessions ended here
    on_declared_lost: Callable[[], Awaitable[None]] | None = None  # this node was declared lost
    # This node's own clock of elapsed time: a row is declared lost only once it has also
    # been seen unchanged for ``lost_after`` seconds on it, so a wall clock that steps (NTP,
    # an operator, a test's fake clock) never makes a live node look silent.
    monotonic: Callable[[], float] = time.monotonic
    _unchanged: dict[str, tuple[datetime, float]] = field(default_factory=dict, repr=False)

    @property
    def after(self) -> timedelta:
        return timedelta(seconds=self.lost_after)

    async def rows(self) -> list[NodeRow]:
        """Every node known, newest first, with its live sessions counted."""
        async with self.maker() as db:
            counts: dict[str, int] = dict(
                (
                    await db.execute(
                        sa.select(sessions.c.node, sa.func.count())
                        .where(sessions.c.ended_at.is_(None))
                        .group_by(sessions.c.node)
                    )
                ).all()
            )
            found = (await db.execute(sa.select(nodes).order_by(nodes.c.name))).all()
        return [_row(r, counts) for r in found]

    async def listing(self) -> list[dict[str, Any]]:
        return [r.public(self.clock(), self.after) for r in await self.rows()]

    async def started(self) -> None:
        """(Re)register this node: a fresh row, as a live node."""
        now = self.clock()
        values = {
            "parent": self.parent or self.name,
            "host": self.host,
            "pid": self.pid,
            "workers": self.workers,
            "started_at": now,
            "heartbeat_at": now,
            "stopped_at": None,
            "lost_at": None,
            "lost_by": None,
            "lost_reason": None,
            **self._keys(),
        }
        async with self.maker() as db, db.begin():
            done = await db.execute(nodes.update().where(nodes.c.name == self.name).values(values))
            if not done.rowcount:  # type: ignore[attr-defined]
                await db.execute(nodes.insert().values(name=self.name, **values))

    async def beat(self) -> None:
        """One heartbeat; tells ``on_declared_lost`` when another node declared this one
        lost meanwhile (and registers it anew)."""
        async with self.maker() as db, db.begin():
            done = await db.execute(
                nodes.update()
                .where(nodes.c.name == self.name, nodes.c.lost_at.is_(None))
                .values(heartbeat_at=self.clock(), stopped_at=None, **self._keys())
            )
        if not done.rowcount:  # type: ignore[attr-defined]
            log.warning(
                "node %s was declared lost by another node; ending what it holds", self.name
            )
            if self.on_declared_lost is not None:
                await self.on_declared_lost()
            await self.started()

    def _keys(self) -> dict[str, str]:
        keys = {"host_key": self.host_key, "assertion_kid": self.assertion_kid}
        return {k: v for k, v in keys.items() if v}

    def _check_keys(self, rows: list[NodeRow]) -> None:
        me = next((r for r in rows if r.name == self.name), None)
        found = "" if me is None else unshared_keys(rows, me, self.clock(), self.after)
        if found and found != self.keys_warning:
            log.error("the cluster's nodes must share their keys: %s", found)
        self.keys_warning = found

    async def stopped(self) -> None:
        async with self.maker() as db, db.begin():
            await db.execute(
                nodes.update()
                .where(nodes.c.name == self.name, nodes.c.lost_at.is_(None))
                .values(stopped_at=self.clock(), heartbeat_at=self.clock())
            )

    async def reap(self) -> list[tuple[str, str, list[str]]]:
        """Declare the silent nodes lost (see the module doc); returns (node, reason,
        session ids) of each this node claimed."""
        now, elapsed = self.clock(), self.monotonic()
        claimed = []
        rows = await self.rows()
        self._check_keys(rows)
        for row in rows:
            seen = self._unchanged.get(row.name)
            if seen is None or seen[0] != row.heartbeat_at:
                self._unchanged[row.name] = (row.heartbeat_at, elapsed)
        for row, reason in silent(rows, self.name, now, self.after):
            if elapsed - self._unchanged[row.name][1] < self.lost_after:
                continue  # not yet watched that long without a beat
            async with self.maker() as db, db.begin():
                won = await db.execute(
                    nodes.update()
                    .where(
                        nodes.c.name == row.name,
                        nodes.c.lost_at.is_(None),
                        nodes.c.stopped_at.is_(None),
                        nodes.c.heartbeat_at < now - self.after,
                    )
                    .values(lost_at=now, lost_by=self.name, lost_reason=reason)
                )
                if not won.rowcount:  # type: ignore[attr-defined]
                    continue  # it beat meanwhile, or another node claimed it first
                ended = await self.sessions.end_live_of(db, row.name, reason, by=self.name)
                await self.audit.append(
                    db,
                    actor="lockgate",
                    action="node.lost",
                    subject=row.name,
                    details={
                        "reason": reason,
                        "by": self.name,
                        "heartbeat_at": row.heartbeat_at.isoformat(),
                        "sessions": len(ended),
                    },
                )
            log.warning("node %s silent since %s: %s, %d sessions ended", row.name,
                        row.heartbeat_at.isoformat(), reason, len(ended))  # fmt: skip
            claimed.append((row.name, reason, ended))
            if ended and self.on_lost is not None:
                await self.on_lost(ended, reason)
        return claimed

    async def ready(self) -> bool:
        """Every worker of this node's serve process beats (this node alone: itself)."""
        parent = self.parent or self.name
        return workers_ready(await self.rows(), parent, self.workers, self.clock(), self.after)

    async def run(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Beat and watch every ``interval`` seconds until cancelled; a database that does
        not answer is tried again at the next beat."""
        while True:
            await sleep(self.interval)
            try:
                await self.beat()
                await self.reap()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                with contextlib.suppress(Exception):
                    log.warning("heartbeat of %s failed: %s", self.name, type(exc).__name__)
