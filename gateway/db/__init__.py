"""The gateway's database layer: engine, its own tables, every package's schema and migrations."""

from gateway.db.engine import (
    READ_ONLY,
    SessionMaker,
    completed,
    create_engine,
    driver_says,
    is_sqlite,
    sessionmaker,
)

__all__ = [
    "READ_ONLY",
    "SessionMaker",
    "completed",
    "create_engine",
    "driver_says",
    "is_sqlite",
    "sessionmaker",
]
