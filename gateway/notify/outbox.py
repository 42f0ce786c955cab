"""The notification outbox: enqueue once per (channel, idempotency key), hand due rows to one
sender at a time (a lease), and record each attempt: sent, retry later, or dead letter."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db import SessionMaker
from gateway.db.tables import notifications

LEASE = timedelta(minutes=2)  # longer than one delivery's timeouts
BACKOFF_BASE = timedelta(seconds=10)
BACKOFF_MAX = timedelta(minutes=30)
KEEP_SENT = timedelta(days=30)  # sent notifications are kept this long, then pruned


@dataclass(frozen=True)
class Outgoing:
    id: int
    channel: str
    key: str
    event: str
    thread: str
    payload: Mapping[str, Any]
    state: str
    attempts: int
    next_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


def backoff(attempts: int) -> timedelta:
    """Wait before attempt ``attempts + 1``: 10 s, 20 s, 40 s ... at most 30 minutes."""
    delay: timedelta = BACKOFF_BASE * (2 ** max(attempts - 1, 0))
    return min(delay, BACKOFF_MAX)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _row(r: Any) -> Outgoing:
    return Outgoing(
        id=int(r.id),
        channel=r.channel,
        key=r.key,
        event=r.event,
        thread=r.thread,
        payload=json.loads(r.payload),
        state=r.state,
        attempts=int(r.attempts),
        next_at=_utc(r.next_at) or r.next_at,
        last_error=r.last_error,
        created_at=_utc(r.created_at) or r.created_at,
        sent_at=_utc(r.sent_at),
    )


async def enqueue(
    db: AsyncSession,
    channel: str,
    key: str,
    event: str,
    thread: str,
    payload: Mapping[str, Any],
    now: datetime,
) -> bool:
    """Add one notification inside ``db``'s transaction; False when (channel, key) is there
    already (a replayed audit event, a second expiry scan)."""
    exists = await db.execute(
        sa.select(notifications.c.id).where(
            notifications.c.channel == channel, notifications.c.key == key
        )
    )
    if exists.first() is not None:
        return False
    await db.execute(
        notifications.insert().values(
            channel=channel,
            key=key[:200],
            event=event,
            thread=thread[:80],
            payload=json.dumps(dict(payload), separators=(",", ":"), ensure_ascii=False),
            state="pending",
            attempts=0,
            next_at=now,
            created_at=now,
        )
    )
    return True


class Outbox:
    def __init__(self, maker: SessionMaker) -> None:
        self.maker = maker

    async def claim_due(self, now: datetime, limit: int = 20) -> list[Outgoing]:
        """Pending rows due by ``now`` that no other sender holds, now leased to the caller,
        oldest first. A channel's notifications go out in order: a row waits while an older
        one of its channel waits for a retry or is being sent."""
        earlier = notifications.alias("earlier")
        blocked = (
            sa.select(earlier.c.id)
            .where(
                earlier.c.channel == notifications.c.channel,
                earlier.c.state == "pending",
                earlier.c.id < notifications.c.id,
                sa.or_(earlier.c.next_at > now, earlier.c.lease_until >= now),
            )
            .exists()
        )
        free = sa.or_(notifications.c.lease_until.is_(None), notifications.c.lease_until < now)
        async with self.maker() as db, db.begin():
            rows = (
                await db.execute(
                    sa.select(notifications)
                    .where(
                        notifications.c.state == "pending",
                        notifications.c.next_at <= now,
                        free,
                        ~blocked,
                    )
                    .order_by(notifications.c.id)
                    .limit(limit)
                )
            ).all()
            claimed = []
            for r in rows:
                result = await db.execute(
                    notifications.update()
                    .where(notifications.c.id == r.id, free)
                    .values(lease_until=now + LEASE)
                )
                if result.rowcount:  # type: ignore[attr-defined]
                    claimed.append(_row(r))
        return claimed

    async def release(self, row: Outgoing) -> None:
        """Give back a claimed row untried (an older one of its channel just failed)."""
        await self._set(row.id)

    async def sent(self, row: Outgoing, now: datetime) -> None:
        await self._set(row.id, state="sent", sent_at=now, attempts=row.attempts + 1)

    async def failed(self, row: Outgoing, error: str, now: datetime, max_attempts: int) -> str:
        """Record a failed attempt; the row's new state (``pending`` or ``dead``)."""
        attempts = row.attempts + 1
        state = "dead" if attempts >= max_attempts else "pending"
        await self._set(
            row.id,
            state=state,
            attempts=attempts,
            last_error=error[:500],
            next_at=now + backoff(attempts),
        )
        return state

    async def _set(self, row_id: int, **values: Any) -> None:
        async with self.maker() as db, db.begin():
            await db.execute(
                notifications.update()
                .where(notifications.c.id == row_id)
                .values(lease_until=None, **values)
            )

    async def list(
        self, *, state: str | None = None, channel: str | None = None, limit: int = 1000
    ) -> list[Outgoing]:
        query = sa.select(notifications).order_by(notifications.c.id).limit(limit)
        if state is not None:
            query = query.where(notifications.c.state == state)
        if channel is not None:
            query = query.where(notifications.c.channel == channel)
        async with self.maker() as db:
            return [_row(r) for r in (await db.execute(query)).all()]

    async def prune(self, before: datetime) -> int:
        """Forget notifications sent before ``before`` (dead letters stay until retried)."""
        async with self.maker() as db, db.begin():
            result = await db.execute(
                notifications.delete().where(
                    notifications.c.state == "sent", notifications.c.sent_at < before
                )
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def get(self, row_id: int) -> Outgoing | None:
        async with self.maker() as db:
            row = (
                await db.execute(sa.select(notifications).where(notifications.c.id == row_id))
            ).first()
        return None if row is None else _row(row)

    async def retry(self, ids: Sequence[int], now: datetime) -> int:
        """Put dead letters back in the queue with a fresh set of attempts."""
        async with self.maker() as db, db.begin():
            result = await db.execute(
                notifications.update()
                .where(notifications.c.id.in_(list(ids)), notifications.c.state == "dead")
                .values(state="pending", attempts=0, next_at=now, lease_until=None)
            )
        return int(result.rowcount)  # type: ignore[attr-defined]
