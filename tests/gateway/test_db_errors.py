"""A database error's text never carries the values that were bound to the statement."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine


async def test_bound_values_stay_out_of_error_text(engine: AsyncEngine) -> None:
    secret = "argon2-hash-that-must-not-be-logged"
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE t (v VARCHAR(64) PRIMARY KEY)"))
        await conn.execute(sa.text("INSERT INTO t (v) VALUES (:v)"), {"v": secret})
    with pytest.raises(sa.exc.IntegrityError) as caught:
        async with engine.begin() as conn:
            await conn.execute(sa.text("INSERT INTO t (v) VALUES (:v)"), {"v": secret})
    assert secret not in str(caught.value) and secret not in repr(caught.value)
