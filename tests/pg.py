"""PostgreSQL for the store tests: one schema per test run, dropped afterwards."""

from __future__ import annotations

import os
from dataclasses import dataclass

BASE_URL = os.environ.get("CONSUMER_AUTH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
"""The test database (PostgreSQL, trust authentication on loopback)."""


@dataclass(frozen=True)
class Database:
    """A schema of our own in the test database."""

    schema: str

    @property
    def url(self) -> str:
        """A store URL for this schema; connections are named after it (``application_name``)."""
        return f"{BASE_URL}?schema={self.schema}&application_name={self.schema}"

    def execute(self, statement: str, *params: object) -> list[tuple[object, ...]]:
        """Run one statement on a fresh connection (autocommit) and return its rows."""
        import psycopg

        with psycopg.connect(BASE_URL, autocommit=True, connect_timeout=5) as connection:
            cursor = connection.execute(statement.encode(), params or None)
            return list(cursor.fetchall()) if cursor.description else []

    def terminate_store_connections(self) -> int:
        """``pg_terminate_backend`` every connection a store of this schema opened; returns how many."""
        rows = self.execute(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()) AS terminated",
            self.schema,
        )
        return int(str(rows[0][0]))
