from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from gateway.audit import AuditLog, init_chain
from gateway.db import SessionMaker
from gateway.db.tables import metadata as gateway_tables
from vault.keys import Keyring, new_master_key
from vault.service import VaultService
from vault.tables import metadata as vault_tables


class FailingAudit:
    """An audit port whose writes always fail: nothing may happen without an audit event."""

    async def append(
        self,
        db: AsyncSession,
        *,
        actor: str,
        action: str,
        subject: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        raise RuntimeError("audit store unavailable")


@pytest.fixture
async def audit(engine: AsyncEngine, maker: SessionMaker) -> AuditLog:
    async with engine.begin() as conn:
        await conn.run_sync(gateway_tables.create_all)
        await conn.run_sync(vault_tables.create_all)
    async with maker() as db, db.begin():
        await init_chain(db)
    return AuditLog(maker, node="test")


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(new_master_key())


@pytest.fixture
def vault(maker: SessionMaker, keyring: Keyring, audit: AuditLog) -> VaultService:
    return VaultService(maker, keyring, audit)
