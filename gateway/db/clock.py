"""The database's notion of now, and how far this node's clock is from it.

Grants end at instants written by whichever node made them; a node whose clock is off would
end sessions early or late. Each node measures its offset from the database's clock on a
timer (``ClockWatch.check``), warns in the log and in ``/readyz`` when it exceeds
``SKEW_WARNING``, and ends sessions against the database's now (``KillSwitch.end_expired``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)
SKEW_WARNING = timedelta(seconds=5)


async def database_now(engine: AsyncEngine) -> datetime:
    """The database server's current time (UTC); for SQLite, the host's own."""
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            text = (
                await conn.execute(sa.text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"))
            ).scalar_one()
            return datetime.fromisoformat(str(text)).replace(tzinfo=UTC)
        value = (await conn.execute(sa.text("SELECT clock_timestamp()"))).scalar_one()
        assert isinstance(value, datetime)
        return value.astimezone(UTC)


class ClockWatch:
    def __init__(self, engine: AsyncEngine, now: Callable[[], datetime]) -> None:
        self.engine = engine
        self.now = now
        self.skew: timedelta | None = None  # database minus node; None until measured

    async def check(self) -> datetime:
        """Measure the offset (the node's reading taken half-way through the query) and
        return the database's now; logs a warning when the offset is over the limit."""
        before = self.now()
        db_now = await database_now(self.engine)
        after = self.now()
        skew = db_now - (before + (after - before) / 2)
        was_off = self.warning() is not None
        self.skew = skew
        if self.warning() is not None and not was_off:
            log.warning("clock skew: %s", self.warning())
        return db_now

    def warning(self) -> str | None:
        """One line when the node's clock is more than ``SKEW_WARNING`` off, else None."""
        if self.skew is None or abs(self.skew) <= SKEW_WARNING:
            return None
        seconds = -self.skew.total_seconds()
        return (
            f"this node's clock is {abs(seconds):.1f} s "
            f"{'ahead of' if seconds > 0 else 'behind'} the database's"
        )
