from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.libdb import AuditLog, FailingAudit, SessionMaker, create_tables
from vault.keys import Keyring, new_master_key
from vault.service import VaultService
from vault.tables import metadata as vault_tables

__all__ = ["FailingAudit"]  # still importable from here


@pytest.fixture
async def audit(engine: AsyncEngine, maker: SessionMaker) -> AuditLog:
    await create_tables(engine, vault_tables)
    return await AuditLog.create(engine, maker)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(new_master_key())


@pytest.fixture
def vault(maker: SessionMaker, keyring: Keyring, audit: AuditLog) -> VaultService:
    return VaultService(maker, keyring, audit)
