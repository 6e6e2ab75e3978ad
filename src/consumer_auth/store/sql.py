"""A SQL store through SQLAlchemy Core: SQLite embedded (a file), PostgreSQL for many machines.

This module is long because the store's writes, reads, revision counter and PostgreSQL notifications share
one schema and one transaction discipline.

Two tables hold everything: ``consumer_auth_resources`` (one JSON document per consumer, credential,
consumer group, service and route) and ``consumer_auth_revision`` (one counter, advanced by every write in the same
transaction). Gateways compare the counter to notice changes; on PostgreSQL every write also sends a
``NOTIFY`` on commit, which gateways ``LISTEN`` to, so a change reaches them at once and the periodic
revision check is only a safety net (for a notification lost while a connection was down).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import URL, Connection, Engine, create_engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError

from consumer_auth.errors import ConfigError, StoreError, StoreUnavailableError

from ._documents import (
    ConsumerCache,
    assemble,
    broken_consumers,
    by_kind,
    group_of,
    in_use,
    prepare,
    split_credential_key,
    without_consumers,
)
from .base import KINDS, Resource, Snapshot

if TYPE_CHECKING:
    import psycopg

__all__ = ["SQLStore"]

T = TypeVar("T")

_RESOURCES = "consumer_auth_resources"
_REVISION = "consumer_auth_revision"


logger = logging.getLogger("consumer_auth.store")


def _reason(error: BaseException) -> str:
    """The first line of a driver's message: what went wrong, without the SQL or its parameters."""
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    return (lines[0] if lines else type(original).__name__)[:200]


class SQLStore:
    """Consumers, credentials, services and routes in a SQL database, shared by every gateway using it.

    Args:
        url: A SQLAlchemy URL: ``sqlite:///path/consumers.db`` (nothing to run; see ``create``) or
            ``postgresql://user@host/db`` (needs ``pip install 'consumer-auth[postgres]'``). A ``schema``
            query parameter (``...?schema=gateway``) puts the tables in that PostgreSQL schema.
        schema: The same, as an argument.
        poll_interval: Default seconds between revision checks (PostgreSQL: 5, the notifications do the
            rest; SQLite: 1).
        connect_timeout: Seconds to wait for a PostgreSQL connection before calling the store
            unavailable.
        create: SQLite: create the file when it is missing (the default here). With ``False``, as
            :func:`~consumer_auth.store.open_store` opens a URL for a gateway, reading a file that does
            not exist is a :class:`~consumer_auth.StoreError` naming it (a mistyped path must not serve
            an empty store); a write still creates it. A missing directory is always an error.

    Tables are created on first use. Every public method may raise
    :class:`~consumer_auth.StoreUnavailableError` (connection refused, reset, timed out) or
    :class:`~consumer_auth.StoreError`; their messages never contain a password.

    Example::

        store = SQLStore("sqlite:///consumers.db")
        store.put_resource("consumers", "alex", {"plugins": {"basic-auth": {"username": "alex", "password": "123456"}}})
    """

    def __init__(
        self,
        url: str | URL,
        *,
        schema: str | None = None,
        poll_interval: float | None = None,
        connect_timeout: float = 5.0,
        create: bool = True,
    ) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StoreError("not a database URL (expected sqlite:///FILE or postgresql://HOST/DB)") from None
        self.name = parsed.render_as_string(hide_password=True)
        query_schema = parsed.query.get("schema")
        if query_schema is not None:
            schema = schema or (query_schema if isinstance(query_schema, str) else query_schema[0])
            parsed = parsed.difference_update_query(["schema"])
        backend = parsed.get_backend_name()
        connect_args: dict[str, Any] = {}
        if backend == "postgresql":
            if parsed.drivername in ("postgresql", "postgres"):
                parsed = parsed.set(drivername="postgresql+psycopg")
            connect_args["connect_timeout"] = max(1, round(connect_timeout))
            if "application_name" not in parsed.query:
                connect_args["application_name"] = "consumer-auth"
        elif backend == "sqlite":
            if parsed.database in (None, "", ":memory:"):
                raise StoreError("an in-memory SQLite database cannot be shared: give a file, sqlite:///FILE")
            connect_args["timeout"] = connect_timeout
            self._sqlite_file: Path | None = Path(parsed.database).absolute()
        else:
            raise StoreError(f"unsupported database {backend!r} (expected sqlite or postgresql)")
        if backend != "sqlite":
            self._sqlite_file = None
        self.create = create
        self._url = parsed
        self._postgres = backend == "postgresql"
        self._connect_args = connect_args
        self.schema = schema
        self.default_poll_interval = poll_interval or (5.0 if self._postgres else 1.0)
        channel = f"consumer_auth:{schema}" if schema else "consumer_auth"
        if len(channel.encode()) > 63:
            channel = "consumer_auth:" + hashlib.sha256(channel.encode()).hexdigest()[:40]
        self.channel = channel
        metadata = MetaData(schema=schema)
        self._resources = Table(
            _RESOURCES,
            metadata,
            Column("kind", String(16), primary_key=True),
            Column("key", String(200), primary_key=True),
            Column("document", Text, nullable=False),
            Column("created", BigInteger, nullable=False),
            Column("modified", BigInteger, nullable=False),
        )
        self._revision = Table(
            _REVISION,
            metadata,
            Column("id", Integer, primary_key=True, autoincrement=False),
            Column("revision", BigInteger, nullable=False),
        )
        self._metadata = metadata
        self._engine = self._make_engine()
        self._ready = False
        self._cache = ConsumerCache()
        self._listener: psycopg.Connection[Any] | None = None

    def _make_engine(self) -> Engine:
        try:
            engine = create_engine(
                self._url,
                pool_pre_ping=True,
                pool_size=2,
                connect_args=self._connect_args,
                hide_parameters=True,  # documents hold password hashes: never in SQLAlchemy's errors or logs
            )
        except ModuleNotFoundError as error:
            raise StoreError(
                f"the {error.name} driver is not installed (pip install 'consumer-auth[postgres]')"
            ) from None
        if not self._postgres:

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(connection: Any, _record: Any) -> None:
                cursor = connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
                cursor.close()

        return engine

    # -- plumbing ----------------------------------------------------------------------------------

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except (OperationalError, InterfaceError) as error:
            raise StoreUnavailableError(_reason(error)) from None
        except DBAPIError as error:
            if error.connection_invalidated:
                raise StoreUnavailableError(_reason(error)) from None
            raise StoreError(_reason(error)) from None

    def _ensure(self, write: bool = False) -> None:
        """Create the schema, tables and revision row when missing (safe with concurrent processes).

        A SQLite file is created by a write only: reading one that does not exist is a mistyped path
        (``sqlite:///x.db`` is relative, ``sqlite:////x.db`` absolute), not an empty store.
        """
        if self._ready:
            return
        file = self._sqlite_file
        if file is not None:
            if not file.parent.is_dir():
                raise StoreError(f"{file}: no such directory ({self._relative_hint()})")
            if not (write or self.create or file.exists()):
                raise StoreError(
                    f"{file}: no such SQLite file ({self._relative_hint()}; the first write, "
                    "e.g. `consumer-auth consumers add`, creates it)"
                )
        for attempt in range(3):
            try:
                with self._engine.begin() as connection:
                    if self._postgres and self.schema:
                        quoted = connection.dialect.identifier_preparer.quote_schema(self.schema)
                        connection.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
                    self._metadata.create_all(connection, checkfirst=True)
                    found = connection.execute(select(self._revision.c.revision)).first()
                    if found is None:
                        connection.execute(insert(self._revision).values(id=1, revision=0))
                self._ready = True
                return
            except DBAPIError:
                # Two processes creating the tables at once: one wins, the other sees them on retry.
                if attempt == 2:
                    raise

    def _relative_hint(self) -> str:
        database = self._url.database or ""
        if Path(database).is_absolute():
            return f"{self.name} names an absolute path"
        return f"{self.name} is relative to the current directory; sqlite:////PATH is an absolute one"

    def _current(self, connection: Connection) -> int:
        return int(connection.execute(select(self._revision.c.revision)).scalar_one())

    def _rows(self, connection: Connection) -> dict[str, list[tuple[str, str]]]:
        table = self._resources
        rows = connection.execute(
            select(table.c.kind, table.c.key, table.c.document).order_by(table.c.created, table.c.key)
        )
        return by_kind((kind, key, text) for kind, key, text in rows)

    def _write(self, change: Callable[[Connection, int], tuple[T, bool]]) -> T:
        """Run ``change`` in one transaction that first takes the revision row (serializing writers),
        then validates everything and notifies listeners; nothing is kept when ``change`` says it
        changed nothing or makes the content invalid.

        Content that was already invalid before (a resource stored by an older version, or written to
        the database by hand) does not block a write that leaves that same error as it was: a
        compromised consumer can always be removed. The old error is logged.
        """
        with self._guard():
            self._ensure(write=True)
            with self._engine.connect() as connection, connection.begin() as transaction:
                connection.execute(
                    update(self._revision)
                    .where(self._revision.c.id == 1)
                    .values(revision=self._revision.c.revision + 1)
                )
                revision = self._current(connection)
                before = self._rows(connection)
                result, changed = change(connection, revision)
                if not changed:
                    transaction.rollback()
                    return result
                after = self._rows(connection)
                try:
                    assemble(after, self._cache)
                except ConfigError as error:
                    broken = broken_consumers(before)
                    if not broken:
                        raise
                    assemble(without_consumers(after, broken))  # an error of this write's own is raised
                    logger.warning(
                        "%s: stored consumers are invalid (%s); the write went ahead", self.name, error
                    )
                if self._postgres:
                    connection.execute(select(func.pg_notify(self.channel, str(revision))))
            return result

    # -- Store ---------------------------------------------------------------------------------------

    def revision(self) -> int:
        """The revision counter (advanced by every write)."""
        with self._guard():
            self._ensure()
            with self._engine.connect() as connection:
                return self._current(connection)

    def load(self) -> Snapshot:
        """Read and validate everything.

        The revision is read before the documents, so a write committed in between is seen again at
        the next check rather than missed.
        """
        with self._guard():
            self._ensure()
            with self._engine.connect() as connection:
                revision = self._current(connection)
                grouped = self._rows(connection)
        config = assemble(grouped, self._cache)
        return Snapshot(
            revision, config.consumers, config.routes, config.services, consumer_groups=config.consumer_groups
        )

    def wait_for_change(self, timeout: float, wake: threading.Event) -> None:
        """PostgreSQL: wait for a ``NOTIFY`` (returning at once after (re)connecting the listener, so
        the caller's revision check covers anything missed meanwhile). SQLite: wait ``timeout``."""
        if not self._postgres:
            wake.wait(timeout)
            return
        listener = self._listener
        if listener is None:
            self._listener = self._listen()
            return
        import psycopg

        deadline = time.monotonic() + timeout
        while not wake.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                for _notification in listener.notifies(timeout=min(remaining, 0.25), stop_after=1):
                    return
            except psycopg.Error as error:
                self._drop_listener()
                raise StoreUnavailableError(_reason(error)) from None

    def _listen(self) -> psycopg.Connection[Any]:
        import psycopg
        from psycopg import sql

        conninfo = self._url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            connection = psycopg.connect(conninfo, autocommit=True, **self._connect_args)
            connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except psycopg.Error as error:
            raise StoreUnavailableError(_reason(error)) from None
        return connection

    def _drop_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with suppress(Exception):  # a broken connection may fail to close; it is gone anyway
                listener.close()

    def after_fork(self) -> None:
        """Leave the parent's connections to the parent: new ones are opened on demand."""
        self._listener = None
        self._engine.dispose(close=False)

    def close(self) -> None:
        """Close every connection."""
        self._drop_listener()
        self._engine.dispose()

    # -- WritableStore -------------------------------------------------------------------------------

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r} (expected one of {', '.join(KINDS)})")

    def _resource(self, row: Any) -> Resource:
        return Resource(row.kind, row.key, json.loads(row.document), int(row.created), int(row.modified))

    def list_resources(self, kind: str, parent: str | None = None) -> list[Resource]:
        """Every resource of a kind in creation order (credentials of one consumer with ``parent``)."""
        self._check_kind(kind)
        table = self._resources
        query = select(table).where(table.c.kind == kind).order_by(table.c.created, table.c.key)
        if parent is not None:
            query = query.where(table.c.key.startswith(parent + "/", autoescape=True))
        with self._guard():
            self._ensure()
            with self._engine.connect() as connection:
                return [self._resource(row) for row in connection.execute(query)]

    def get_resource(self, kind: str, key: str) -> Resource | None:
        """One resource, or ``None``."""
        self._check_kind(kind)
        table = self._resources
        with self._guard():
            self._ensure()
            with self._engine.connect() as connection:
                row = connection.execute(
                    select(table).where(table.c.kind == kind, table.c.key == key)
                ).first()
        return self._resource(row) if row is not None else None

    def put_resource(self, kind: str, key: str, document: Mapping[str, Any]) -> tuple[Resource, bool]:
        """Create or replace a resource (passwords hashed first); returns it and whether it is new.

        Raises:
            ConfigError: the document is invalid (relative paths), or the content with it would be
                (resources named by key); nothing is changed.
        """
        return self.put_resources([(kind, key, document)])[0]

    def put_resources(
        self, items: Iterable[tuple[str, str, Mapping[str, Any]]]
    ) -> list[tuple[Resource, bool]]:
        """Create or replace several resources in one transaction (a consumer and its first credential):
        all are written, or none.

        Raises:
            ConfigError: as :meth:`put_resource`; nothing is changed.
        """
        prepared: list[tuple[str, str, dict[str, Any], str]] = []
        for kind, key, document in items:
            self._check_kind(kind)
            body = prepare(kind, key, document)
            text = json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
            prepared.append((kind, key, body, text))
        table = self._resources

        def put(
            connection: Connection, revision: int, kind: str, key: str, body: dict[str, Any], text: str
        ) -> tuple[Resource, bool]:
            if kind == "credentials":
                owner, _ = split_credential_key(key)
                found = connection.execute(
                    select(table.c.key).where(table.c.kind == "consumers", table.c.key == owner)
                ).first()
                if found is None:
                    raise ConfigError("", f"no consumer named {owner!r}")
            existing = connection.execute(
                select(table.c.created).where(table.c.kind == kind, table.c.key == key)
            ).first()
            if existing is None:
                connection.execute(
                    insert(table).values(
                        kind=kind, key=key, document=text, created=revision, modified=revision
                    )
                )
                return Resource(kind, key, body, revision, revision), True
            connection.execute(
                update(table)
                .where(table.c.kind == kind, table.c.key == key)
                .values(document=text, modified=revision)
            )
            return Resource(kind, key, body, int(existing.created), revision), False

        def change(connection: Connection, revision: int) -> tuple[list[tuple[Resource, bool]], bool]:
            return [put(connection, revision, *item) for item in prepared], bool(prepared)

        return self._write(change)

    def delete_resource(self, kind: str, key: str) -> bool:
        """Delete a resource (a consumer with all its credentials); ``False`` when there was none.

        Raises:
            ConfigError: the content without it would be invalid (a service that routes still use); a
                consumer group that a consumer is in: ``can not delete this consumer group, consumer
                [alex] is still using it now`` (APISIX's words), at no path.
        """
        self._check_kind(kind)
        table = self._resources

        def change(connection: Connection, _revision: int) -> tuple[bool, bool]:
            if kind == "consumer_groups":
                members = connection.execute(
                    select(table.c.key, table.c.document)
                    .where(table.c.kind == "consumers")
                    .order_by(table.c.created, table.c.key)
                )
                member = next((name for name, text in members if group_of(text) == key), None)
                if member is not None:
                    raise ConfigError("", in_use(member))
            deleted = connection.execute(delete(table).where(table.c.kind == kind, table.c.key == key))
            if not deleted.rowcount:
                return False, False
            if kind == "consumers":
                connection.execute(
                    delete(table).where(
                        table.c.kind == "credentials", table.c.key.startswith(key + "/", autoescape=True)
                    )
                )
            return True, True

        return self._write(change)

    def __repr__(self) -> str:
        return f"SQLStore({self.name!r})"
