"""The identity table: which Lockgate user a provider's subject is, when they last signed in
or were checked, and whether the provider has stopped recognising them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from gateway.db import SessionMaker
from gateway.db.tables import oidc_identities as table


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class Identity:
    provider: str
    subject: str
    user: str
    signed_in_at: datetime
    checked_at: datetime | None
    deprovisioned_at: datetime | None
    deprovision_reason: str | None


def _identity(row: Any) -> Identity:
    signed = _utc(row.signed_in_at)
    assert signed is not None
    return Identity(
        row.provider,
        row.subject,
        row.user,
        signed,
        _utc(row.checked_at),
        _utc(row.deprovisioned_at),
        row.deprovision_reason,
    )


class Identities:
    def __init__(self, maker: SessionMaker) -> None:
        self.maker = maker

    async def by_subject(self, provider: str, subject: str) -> Identity | None:
        async with self.maker() as db:
            row = (
                await db.execute(
                    sa.select(table).where(table.c.provider == provider, table.c.subject == subject)
                )
            ).first()
        return _identity(row) if row is not None else None

    async def of_user(self, user: str) -> list[Identity]:
        async with self.maker() as db:
            rows = (await db.execute(sa.select(table).where(table.c.user == user))).all()
        return [_identity(r) for r in rows]

    async def of_provider(self, provider: str) -> list[Identity]:
        async with self.maker() as db:
            rows = (
                await db.execute(
                    sa.select(table)
                    .where(table.c.provider == provider, table.c.deprovisioned_at.is_(None))
                    .order_by(table.c.user)
                )
            ).all()
        return [_identity(r) for r in rows]

    async def signed_in(self, provider: str, subject: str, user: str, now: datetime) -> None:
        """Record a sign-in: the link is created on the first, and a deprovisioned identity
        is recognised again."""
        async with self.maker() as db, db.begin():
            found = await db.execute(
                table.update()
                .where(table.c.provider == provider, table.c.subject == subject)
                .values(
                    signed_in_at=now, checked_at=now, deprovisioned_at=None, deprovision_reason=None
                )
            )
            if found.rowcount == 0:  # type: ignore[attr-defined]
                await db.execute(
                    table.insert().values(
                        provider=provider,
                        subject=subject,
                        user=user,
                        created_at=now,
                        signed_in_at=now,
                        checked_at=now,
                    )
                )

    async def claim(self, provider: str, subject: str, now: datetime, due: datetime) -> bool:
        """Take the check of one identity if it was last checked at ``due`` or before: a
        compare-and-swap on ``checked_at``, so of the processes and nodes that wake for it
        one asks the provider (two refreshes of one rotating refresh token would look like
        token theft to the provider)."""
        async with self.maker() as db, db.begin():
            taken = await db.execute(
                table.update()
                .where(
                    table.c.provider == provider,
                    table.c.subject == subject,
                    sa.or_(table.c.checked_at.is_(None), table.c.checked_at <= due),
                )
                .values(checked_at=now)
            )
            return bool(taken.rowcount == 1)  # type: ignore[attr-defined]

    async def checked(self, provider: str, subject: str, now: datetime) -> None:
        async with self.maker() as db, db.begin():
            await db.execute(
                table.update()
                .where(table.c.provider == provider, table.c.subject == subject)
                .values(checked_at=now)
            )

    async def deprovisioned(self, provider: str, subject: str, now: datetime, reason: str) -> None:
        async with self.maker() as db, db.begin():
            await db.execute(
                table.update()
                .where(table.c.provider == provider, table.c.subject == subject)
                .values(deprovisioned_at=now, deprovision_reason=reason[:500])
            )
