"""Durable stream cursors: per consumer (an audit sink, the notification dispatcher) the last
audit sequence number it has delivered, and a lease naming the one node that streams it.

A cursor only moves forward, and only for the lease holder; a node that lost its lease (it
stalled past the lease) cannot move a cursor that another node now owns."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db import SessionMaker
from gateway.db.tables import stream_cursors
from policy.models import Clock

LEASE = timedelta(seconds=15)


class CursorStore:
    def __init__(self, maker: SessionMaker, node: str, clock: Clock) -> None:
        self.maker = maker
        self.node = node
        self.clock = clock

    async def claim(self, name: str, start: int = 0) -> int | None:
        """Take or renew the lease on ``name``; the cursor's position, or None when another
        node holds a live lease. A new cursor starts at ``start``."""
        now = self.clock()
        until = now + LEASE
        async with self.maker() as db, db.begin():
            updated = await db.execute(
                stream_cursors.update()
                .where(
                    stream_cursors.c.name == name,
                    sa.or_(
                        stream_cursors.c.owner == self.node,
                        stream_cursors.c.owner.is_(None),
                        stream_cursors.c.lease_until < now,
                    ),
                )
                .values(owner=self.node, lease_until=until)
                .returning(stream_cursors.c.seq)
            )
            row = updated.first()
            if row is not None:
                return int(row.seq)
            exists = (await db.execute(_seq_of(name))).first()
            if exists is not None:
                return None
        try:
            async with self.maker() as db, db.begin():
                await db.execute(
                    stream_cursors.insert().values(
                        name=name, seq=start, owner=self.node, lease_until=until, updated_at=now
                    )
                )
        except IntegrityError:
            return None  # another node created it first
        return start

    async def advance(self, name: str, seq: int) -> bool:
        """Move ``name`` forward to ``seq``; False if this node no longer holds the lease."""
        async with self.maker() as db, db.begin():
            return await self.advance_in(db, name, seq)

    async def advance_in(self, db: AsyncSession, name: str, seq: int) -> bool:
        """``advance`` inside the caller's transaction (with the writes the move stands for)."""
        result = await db.execute(
            stream_cursors.update()
            .where(
                stream_cursors.c.name == name,
                stream_cursors.c.owner == self.node,
                stream_cursors.c.seq <= seq,
            )
            .values(seq=seq, updated_at=self.clock())
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def release(self, name: str) -> None:
        async with self.maker() as db, db.begin():
            await db.execute(
                stream_cursors.update()
                .where(stream_cursors.c.name == name, stream_cursors.c.owner == self.node)
                .values(owner=None, lease_until=None)
            )

    async def position(self, name: str) -> int | None:
        async with self.maker() as db:
            row = (await db.execute(_seq_of(name))).first()
        return None if row is None else int(row.seq)


def _seq_of(name: str) -> sa.Select[tuple[int]]:
    return sa.select(stream_cursors.c.seq).where(stream_cursors.c.name == name)
