"""Gateway tests run on the gateway's own engine (its SQLite set-up, hidden bound values)."""

from __future__ import annotations

import pytest

from gateway.db import create_engine
from tests.libdb import EngineFactory


@pytest.fixture
def engine_factory() -> EngineFactory:
    """The production engine (``gateway.db.create_engine``) for the ``engine`` fixture."""
    return create_engine
