"""Failed-login throttling with growing backoff, per (user, address) first, shared by every
node of a cluster through the database (a guess spread over nodes counts as on one).

A key is locked out once its failures reach its limit, for a period that doubles with every
further failure (capped). While locked out every password attempt fails the same way,
whether or not the user exists and whatever the credential. The keys of one login
(``login_keys``) and their limits:

- ``pair:<user>|<address>``: ``max_failures`` — a stranger guessing alice's password from one
  address locks only that address out of alice, never alice herself;
- ``user:<user>``: ``USER_FACTOR`` x ``max_failures`` over all addresses — a ceiling against a
  distributed guess, far above what one address can reach;
- ``addr:<address>``: ``ADDRESS_FACTOR`` x ``max_failures`` over all names — one address
  spraying many names.

Only password checks consult and feed the throttle: a key login costs no hashing and cannot
be guessed, so password failures never block it. A success clears only its own pair.

The counts are rows of ``gw_login_throttle``; one failure updates its keys in one transaction
(rows locked on PostgreSQL, the write lock on SQLite), so concurrent failures on several nodes
all count. When the database cannot be read, ``blocked`` raises: the caller refuses the login
(fail closed). Rows quiet for ``FORGET`` are pruned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db import SessionMaker
from gateway.db.tables import login_throttle as table

BASE = timedelta(seconds=30)
CAP = timedelta(minutes=15)
FORGET = timedelta(hours=1)
PRUNE_EVERY = timedelta(minutes=10)
USER_FACTOR = 20
ADDRESS_FACTOR = 4
_KEY_MAX = 400
_RETRIES = 3  # two nodes inserting the same new key at once: one retries


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class Throttle:
    def __init__(
        self, max_failures: int, clock: Callable[[], datetime], maker: SessionMaker
    ) -> None:
        self.max_failures = max_failures
        self.clock = clock
        self.maker = maker
        self._pruned: datetime | None = None

    def login_keys(self, user: str, address: str) -> tuple[str, str, str]:
        return (f"pair:{user}|{address}"[:_KEY_MAX], f"user:{user}", f"addr:{address}"[:_KEY_MAX])

    def limit(self, key: str) -> int:
        kind = key.partition(":")[0]
        factor = {"user": USER_FACTOR, "addr": ADDRESS_FACTOR}.get(kind, 1)
        return self.max_failures * factor

    def lockout(self, key: str, failures: int, now: datetime) -> datetime | None:
        """Until when ``key`` is locked out after its ``failures``-th failure at ``now``."""
        over = failures - self.limit(key)
        if over < 0:
            return None
        return now + min(BASE * (1 << min(over, 10)), CAP)

    async def blocked(self, *keys: str) -> bool:
        """Whether any of ``keys`` is locked out now; raises when the database cannot say."""
        now = self.clock()
        async with self.maker() as db:
            untils = (
                await db.execute(
                    sa.select(table.c.until).where(
                        table.c.key.in_(keys), table.c.until.is_not(None)
                    )
                )
            ).scalars()
            return any(now < _utc(until) for until in untils)

    async def failed(self, *keys: str) -> None:
        now = self.clock()
        for attempt in range(_RETRIES):
            try:
                async with self.maker() as db, db.begin():
                    await self._count(db, keys, now)
                break
            except IntegrityError:
                if attempt == _RETRIES - 1:
                    raise
        if self._pruned is None or now - self._pruned > PRUNE_EVERY:
            self._pruned = now
            await self._prune(now)

    async def _count(self, db: AsyncSession, keys: Iterable[str], now: datetime) -> None:
        keys = sorted(set(keys))  # one lock order on every node
        rows = {
            r.key: r
            for r in (
                await db.execute(sa.select(table).where(table.c.key.in_(keys)).with_for_update())
            ).all()
        }
        for key in keys:
            row = rows.get(key)
            if row is None:
                await db.execute(
                    table.insert().values(
                        key=key, failures=1, until=self.lockout(key, 1, now), last=now
                    )
                )
                continue
            fresh = now - _utc(row.last) > FORGET
            failures = 1 if fresh else int(row.failures) + 1
            # below its limit, a key keeps the lockout it had (never shortened)
            until = self.lockout(key, failures, now) or row.until
            await db.execute(
                table.update()
                .where(table.c.key == key)
                .values(failures=failures, until=until, last=now)
            )

    async def _prune(self, now: datetime) -> None:
        async with self.maker() as db, db.begin():
            await db.execute(
                table.delete().where(
                    table.c.last < now - FORGET,
                    sa.or_(table.c.until.is_(None), table.c.until < now),
                )
            )

    async def succeeded(self, *keys: str) -> None:
        """A correct password: its pair starts afresh; the user's and the address's counts
        stay (one success must not reset a distributed guess)."""
        pairs = [k for k in keys if k.startswith("pair:")]
        if pairs:
            async with self.maker() as db, db.begin():
                await db.execute(table.delete().where(table.c.key.in_(pairs)))
