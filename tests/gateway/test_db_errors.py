"""A database error's text never carries the values that were bound to the statement."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import driver_says


async def test_bound_values_stay_out_of_error_text(engine: AsyncEngine) -> None:
    secret = "argon2-hash-that-must-not-be-logged"
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE t (v VARCHAR(64) PRIMARY KEY)"))
        await conn.execute(sa.text("INSERT INTO t (v) VALUES (:v)"), {"v": secret})
    with pytest.raises(sa.exc.IntegrityError) as caught:
        async with engine.begin() as conn:
            await conn.execute(sa.text("INSERT INTO t (v) VALUES (:v)"), {"v": secret})
    assert secret not in str(caught.value) and secret not in repr(caught.value)


async def test_what_startup_and_audit_errors_quote_of_the_driver_holds_no_bound_value(
    engine: AsyncEngine,
) -> None:
    """``driver_says`` quotes the driver only for the database's state (OperationalError):
    asyncpg's message about a bad argument quotes the value itself."""
    secret = "sealed-secret-that-must-not-be-shown"
    errors: list[sa.exc.DBAPIError] = []
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE n (i INTEGER PRIMARY KEY, v VARCHAR(64))"))
        await conn.execute(sa.text("INSERT INTO n (i, v) VALUES (1, :v)"), {"v": secret})
    for statement, values in (
        ("INSERT INTO n (i, v) VALUES (1, :v)", {"v": secret}),  # duplicate key
        ("INSERT INTO n (i) VALUES (:i)", {"i": secret}),  # not a number (PostgreSQL)
    ):
        try:
            async with engine.begin() as conn:
                await conn.execute(sa.text(statement), values)
        except sa.exc.DBAPIError as exc:
            errors.append(exc)
    assert errors
    for exc in errors:
        assert secret not in driver_says(exc)
    if engine.dialect.name == "postgresql":  # the reason for the rule
        assert any(secret in str(exc.orig) for exc in errors)
    assert driver_says(sa.exc.OperationalError("x", {}, Exception("database is locked"))) == (
        "OperationalError: database is locked"
    )
