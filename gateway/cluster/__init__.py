"""Events between gateway nodes: the bus (PostgreSQL LISTEN/NOTIFY, SQLite doorbells)."""
