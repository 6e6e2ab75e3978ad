"""Databases for the Django tests: the session's SQLite file and a PostgreSQL schema of its own.

``contrib_modes`` configures Django with both aliases: ``default`` (SQLite, in a temporary directory)
and ``postgres`` (the test PostgreSQL, ``search_path`` set to a schema named for this run). Nothing
connects until a test asks: the ``consumer_db`` fixture migrates an alias once, routes the consumer
models to it (:class:`ConsumerRouter`) and empties their tables after each test. The writes are real
commits, so other threads and processes see them, as they would in a running site.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest

from pg import BASE_URL
from support import service_unavailable

POSTGRES_SCHEMA = f"consumer_auth_django_{uuid.uuid4().hex[:12]}"
_url = urlsplit(BASE_URL)
POSTGRES_SETTINGS: dict[str, Any] = {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": _url.path.lstrip("/") or "postgres",
    "USER": _url.username or "postgres",
    "PASSWORD": _url.password or "",
    "HOST": _url.hostname or "127.0.0.1",
    "PORT": str(_url.port or 5432),
    "OPTIONS": {"options": f"-c search_path={POSTGRES_SCHEMA}", "connect_timeout": 3},
}
POSTGRES_DATABASES = {"postgres": POSTGRES_SETTINGS}
"""Added to ``DATABASES`` by ``contrib_modes``."""


class ConsumerRouter:
    """Sends the consumer models to :attr:`alias` (``None``: the default database)."""

    alias: ClassVar[str | None] = None

    def db_for_read(self, model: type[Any], **hints: Any) -> str | None:
        return self.alias if model._meta.app_label == "consumer_auth" else None

    db_for_write = db_for_read

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db == "default" or app_label == "consumer_auth"


_migrated: set[str] = set()


def migrate(alias: str) -> None:
    """Create the tables of ``alias`` once per session."""
    if alias in _migrated:
        return
    from django.core.management import call_command

    if alias != "default":
        migrate("default")  # users, sessions and the admin log live there
    call_command("migrate", database=alias, verbosity=0, interactive=False)
    _migrated.add(alias)


def _postgres_ready() -> None:
    import psycopg

    try:
        with psycopg.connect(BASE_URL, autocommit=True, connect_timeout=3) as connection:
            connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{POSTGRES_SCHEMA}"'.encode())
    except Exception as error:  # noqa: BLE001 - any failure to connect means "not available"
        service_unavailable("PostgreSQL", f"{BASE_URL}: {type(error).__name__}")


def drop_postgres_schema() -> None:
    """Drop this run's schema (at the end of the session), closing Django's connections first."""
    if "postgres" not in _migrated:
        return
    import psycopg
    from django.db import connections

    connections["postgres"].close()
    with psycopg.connect(BASE_URL, autocommit=True, connect_timeout=3) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{POSTGRES_SCHEMA}" CASCADE'.encode())


def empty(alias: str) -> None:
    """Delete every consumer, credential, consumer group and the revision row of ``alias``."""
    from consumer_auth.contrib.django.models import BasicAuthCredential, Consumer, ConsumerGroup, Revision

    BasicAuthCredential.objects.using(alias).all().delete()
    Consumer.objects.using(alias).all().delete()
    ConsumerGroup.objects.using(alias).all().delete()
    Revision.objects.using(alias).all().delete()


@pytest.fixture(params=["sqlite", "postgresql"])
def consumer_db(request: pytest.FixtureRequest) -> Iterator[str]:
    """The alias the consumer models live in for this test: SQLite, then PostgreSQL."""
    alias = "default" if request.param == "sqlite" else "postgres"
    if alias == "postgres":
        _postgres_ready()
    migrate(alias)
    empty(alias)
    ConsumerRouter.alias = alias
    try:
        yield alias
    finally:
        ConsumerRouter.alias = None
        empty(alias)


@pytest.fixture
def sqlite_db() -> Iterator[str]:
    """The default SQLite database, migrated and emptied of consumers."""
    migrate("default")
    empty("default")
    try:
        yield "default"
    finally:
        empty("default")
