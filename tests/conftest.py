"""Fixtures shared by every test module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import contrib_modes  # noqa: F401 - registers the framework integrations in MODES
import proxy_modes  # noqa: F401 - registers the proxy modes in support.MODES
import proxy_servers
from pg import BASE_URL, Database
from support import MODES, REDIS_URL, Mode, redis_or_skip, service_unavailable

pytest_plugins = ["browser"]  # the browser and page fixtures (a real Chromium), for any module

_made: dict[str, Mode] = {}


@pytest.fixture(params=sorted(MODES), ids=lambda name: name)
def mode(request: pytest.FixtureRequest) -> Mode:
    """Every way of running a gateway; the conformance table runs once per mode."""
    name: str = request.param
    if name not in _made:
        _made[name] = MODES[name]()
    return _made[name]


@pytest.fixture(scope="session", autouse=True)
def _stop_servers() -> Iterator[None]:
    """Stop the loopback servers the proxy tests started, at the end of the session."""
    yield
    proxy_servers.stop_all()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A unique Redis key prefix, and every key under it deleted afterwards (skips without Redis)."""
    redis_or_skip()
    import redis

    prefix = f"consumer-auth-test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def postgres() -> Iterator[Database]:
    """A schema of its own in the PostgreSQL test database, dropped (with everything in it) afterwards."""
    try:
        import psycopg

        with psycopg.connect(BASE_URL, connect_timeout=3):
            pass
    except Exception as error:  # noqa: BLE001 - any failure to connect means "not available"
        service_unavailable("PostgreSQL", f"{BASE_URL}: {type(error).__name__}")
    database = Database(f"consumer_auth_test_{uuid.uuid4().hex[:12]}")
    try:
        yield database
    finally:
        database.execute(f'DROP SCHEMA IF EXISTS "{database.schema}" CASCADE')


@pytest.fixture(scope="session", autouse=True)
def _drop_django_schema() -> Iterator[None]:
    """Drop the PostgreSQL schema the Django tests used, at the end of the session."""
    yield
    import django_db

    django_db.drop_postgres_schema()
