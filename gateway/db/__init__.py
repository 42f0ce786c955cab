"""The gateway's database layer: engine, its own tables, every package's schema and migrations."""

from gateway.db.engine import SessionMaker, completed, create_engine, is_sqlite, sessionmaker

__all__ = ["SessionMaker", "completed", "create_engine", "is_sqlite", "sessionmaker"]
