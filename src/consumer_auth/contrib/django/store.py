"""``DjangoStore``: the consumers of Django admin as a consumer store that gateways follow.

Set ``CONSUMER_AUTH = {"store": "django", "routes": [...], ...}``: the gateway takes its consumers from
the models of :mod:`consumer_auth.contrib.django.models` (routes, services and settings stay in the
setting) and keeps them current, in every process, without a restart:

- in the process that made a change, the change wakes the gateway as soon as its transaction commits
  (``post_save``/``post_delete`` signals, then ``transaction.on_commit``);
- every process also compares one revision row, at most once every ``poll_interval`` seconds (one
  primary-key query), and reloads when it moved.

The store follows the :class:`~consumer_auth.store.Store` interface, so a
:class:`~consumer_auth.store.StoreWatcher` applies each revision exactly as for the SQL store: snapshots
are validated whole and swapped in atomically, and while the database cannot be reached the gateway keeps
answering from its last snapshot and catches up when it is back.
"""

from __future__ import annotations

import asyncio
import json
import threading
import weakref
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any, NamedTuple, TypeVar

from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    connections,
    router,
    transaction,
)
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import F
from django.utils import timezone

from consumer_auth.errors import ConfigError, StoreError, StoreUnavailableError
from consumer_auth.sansio._validate import describe, expect_mapping, expect_number, reject_unknown
from consumer_auth.sansio.consumers import BasicAuthCredential as CoreCredential
from consumer_auth.store import Snapshot, StoreWatcher
from consumer_auth.store._documents import ConsumerCache, assemble, by_kind
from consumer_auth.store.watcher import logger

from .models import (
    BasicAuthCredential,
    Consumer,
    ConsumerGroup,
    Revision,
    consumer_document,
    credential_document,
    group_document,
)

__all__ = ["DEFAULT_POLL_INTERVAL", "DjangoStore", "changed", "follow_rehashes", "store_from_setting"]

T = TypeVar("T")


DEFAULT_POLL_INTERVAL = 2.0
"""Seconds between two revision checks of a process, when the setting gives none."""

_OPTIONS = ("type", "database", "poll_interval", "rehash")
_stores: weakref.WeakSet[DjangoStore] = weakref.WeakSet()


def _reason(error: BaseException) -> str:
    """The first line of the driver's message: what went wrong, without SQL or parameters."""
    lines = str(error).strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:200]


def _text(document: Mapping[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


class DjangoRevision(NamedTuple):
    """The revision row: ``epoch`` changes when the row is recreated, ``counter`` with every change."""

    epoch: str | None
    counter: int

    def describe(self) -> str:
        """``revision 7``, for log lines (the epoch only tells a recreated row apart)."""
        return f"revision {self.counter}"


def _revision_of(row: tuple[Any, Any] | None) -> DjangoRevision:
    return DjangoRevision(str(row[0]), int(row[1])) if row is not None else DjangoRevision(None, 0)


class DjangoStore:
    """The consumers and basic-auth credentials of Django admin, as a read-only consumer store.

    Args:
        database: The database alias to read (default: where Django's routers send reads of
            :class:`~consumer_auth.contrib.django.models.Consumer`, usually ``"default"``).
        poll_interval: Seconds between revision checks in each process (default 2). Changes made in
            the same process apply at commit, without waiting.
        rehash: Save a fresh argon2id hash of a credential whose stored form is outdated (imported from
            htpasswd: ``$apr1$``, ``{SHA}``, bcrypt; or argon2 with weaker parameters) after its first
            successful login, as Django upgrades its users' hashes (default ``True``).

    Reads run on their own database connection, in the store's thread (a gateway's
    :class:`~consumer_auth.store.StoreWatcher`), never while a request waits. Every method may raise
    :class:`~consumer_auth.StoreUnavailableError` (the database cannot be reached) or
    :class:`~consumer_auth.StoreError` (the tables are missing: run ``manage.py migrate``).
    """

    def __init__(
        self, *, database: str | None = None, poll_interval: float | None = None, rehash: bool = True
    ) -> None:
        if database is not None and database not in connections.settings:
            raise ConfigError("database", f"no database {database!r} in DATABASES")
        self.database = database
        self.default_poll_interval = (
            DEFAULT_POLL_INTERVAL if poll_interval is None else expect_number(poll_interval, "poll_interval")
        )
        self.rehash = rehash
        self.name = f"django:{database or 'default'}"
        self._cache = ConsumerCache()
        self._wake: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._connection: BaseDatabaseWrapper | None = None
        _stores.add(self)

    @property
    def alias(self) -> str:
        """The database alias read."""
        return self.database or router.db_for_read(Consumer) or "default"

    # -- plumbing ----------------------------------------------------------------------------------

    def _query(self, read: Callable[[str], T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._guarded(read)
        # Built from an async request (the first one after the setting changed): Django refuses
        # queries on an event loop, so this one read runs in a thread of its own.
        with ThreadPoolExecutor(1, thread_name_prefix="consumer-auth-django-store") as pool:
            return pool.submit(self._in_own_thread, read).result()

    def _in_own_thread(self, read: Callable[[str], T]) -> T:
        try:
            return self._guarded(read)
        finally:
            connections.close_all()

    def _guarded(self, read: Callable[[str], T]) -> T:
        alias = self.alias
        if threading.current_thread() is self._thread:
            self._connection = connections[alias]  # the watcher's own, closed by close()
        try:
            return read(alias)
        except DatabaseError as error:
            connection = connections[alias]
            with suppress(Exception):  # a broken connection may fail to close; the next read reconnects
                connection.close()
            if not self._tables_exist(connection):
                raise StoreError(
                    f"the consumer_auth tables are missing in database {alias!r}: run manage.py migrate"
                ) from None
            if isinstance(error, OperationalError | InterfaceError):
                raise StoreUnavailableError(_reason(error)) from None
            raise StoreError(_reason(error)) from None

    def tables_exist(self) -> bool:
        """Whether the models' tables exist (``migrate`` ran); ``True`` when the database cannot tell."""
        return self._query(lambda alias: self._tables_exist(connections[alias]))

    @staticmethod
    def _tables_exist(connection: BaseDatabaseWrapper) -> bool:
        try:
            with connection.cursor() as cursor:
                names = set(connection.introspection.table_names(cursor))
        except DatabaseError:
            with suppress(Exception):
                connection.close()
            return True  # cannot tell: the database is not answering
        return all(model._meta.db_table in names for model in (Consumer, ConsumerGroup, Revision))

    # -- Store ---------------------------------------------------------------------------------------

    def revision(self) -> Hashable:
        """The revision row, a :class:`DjangoRevision`: one primary-key query."""

        def read(alias: str) -> Hashable:
            row = Revision.objects.using(alias).filter(pk=1).values_list("epoch", "value").first()
            return _revision_of(row)

        return self._query(read)

    def load(self) -> Snapshot:
        """Read every consumer and credential in one transaction, validated as one configuration.

        Raises:
            ConfigError: naming the resource (``consumers/alex/credentials/...``), never a secret.
        """

        def read(alias: str) -> tuple[Hashable, dict[str, list[tuple[str, str]]]]:
            with transaction.atomic(using=alias):
                row = Revision.objects.using(alias).filter(pk=1).values_list("epoch", "value").first()
                revision = _revision_of(row)
                # Plain values, not model instances: a reload reads every row (see docs/django.md).
                groups = ConsumerGroup.objects.using(alias).order_by("pk")
                rows = [
                    ("consumer_groups", ident, _text(group_document(ident, desc, labels, plugins)))
                    for ident, desc, labels, plugins in groups.values_list(
                        "ident", "desc", "labels", "plugins"
                    )
                ]
                consumers = Consumer.objects.using(alias).order_by("pk")
                rows += [
                    ("consumers", name, _text(consumer_document(name, custom_id, labels, desc, group)))
                    for name, custom_id, labels, desc, group in consumers.values_list(
                        "name", "custom_id", "labels", "desc", "group__ident"
                    )
                ]
                credentials = BasicAuthCredential.objects.using(alias).order_by("pk")
                rows += [
                    (
                        "credentials",
                        f"{owner}/{ident or f'#{pk}'}",
                        _text(credential_document(ident, username, password_hash)),
                    )
                    for pk, owner, ident, username, password_hash in credentials.values_list(
                        "pk", "consumer__name", "ident", "username", "password_hash"
                    )
                ]
            return revision, by_kind(rows)

        revision, grouped = self._query(read)
        config = assemble(grouped, self._cache)
        return Snapshot(revision, config.consumers, consumer_groups=config.consumer_groups)

    def save_rehash(self, consumer: object, credential: CoreCredential, new_hash: str) -> None:
        """The gateway's ``on_rehash`` hook: store ``new_hash`` for ``credential``, in the background.

        The update applies only while the credential still has the hash that just verified (a password
        set in admin meanwhile wins). It runs in a thread of its own, with its own connection, so the
        request that logged in neither waits for it nor shares its transaction.
        """
        old = credential.verifier.identity.decode("ascii", "replace")
        login = credential.username

        def save() -> None:
            try:
                alias = self.alias
                with transaction.atomic(using=alias):
                    updated = (
                        BasicAuthCredential.objects.using(alias)
                        .filter(username=login, password_hash=old)
                        .update(password_hash=new_hash, modified=timezone.now())
                    )
                    if updated:
                        changed(alias)
            except DatabaseError as error:
                logger.warning("%s: could not save a new hash for a login: %s", self.name, _reason(error))
            finally:
                connections.close_all()

        threading.Thread(target=save, name="consumer-auth-django-rehash", daemon=True).start()

    def wait_for_change(self, timeout: float, wake: threading.Event) -> None:
        """Wait ``timeout`` seconds, or less when a change commits in this process."""
        self._thread = threading.current_thread()
        self._wake = wake
        wake.wait(timeout)

    def notify(self) -> None:
        """Have the watcher check now (a change was committed in this process)."""
        wake = self._wake
        if wake is not None:
            wake.set()

    def after_fork(self) -> None:
        """Leave the parent's connection to the parent: the child's watcher opens its own."""
        self._connection = None
        self._thread = None
        self._wake = None

    def close(self) -> None:
        """Close the watcher thread's connection (call after the watcher stopped)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.inc_thread_sharing()
            try:
                with suppress(Exception):
                    connection.close()
            finally:
                connection.dec_thread_sharing()
        _stores.discard(self)

    def __repr__(self) -> str:
        return f"DjangoStore({self.name!r})"


def changed(using: str = "default") -> None:
    """Record a change made without model signals (``QuerySet.update()``, ``bulk_create()``, raw SQL).

    Saves and deletes through the models call it themselves. Advances the revision in the current
    transaction and, once it commits, wakes the gateways of this process; other processes see it at
    their next revision check.
    """
    updated = Revision.objects.using(using).filter(pk=1).update(value=F("value") + 1)
    if not updated:
        Revision.objects.using(using).get_or_create(pk=1, defaults={"value": 1})
    transaction.on_commit(_notify_all, using=using)


def _notify_all() -> None:
    for store in list(_stores):
        store.notify()


def on_model_change(sender: type[Any], *, using: str = "default", **kwargs: Any) -> None:
    """The ``post_save``/``post_delete`` receiver of the models (connected by the app)."""
    changed(using)


def store_from_setting(value: object, where: str) -> DjangoStore:
    """The store of ``CONSUMER_AUTH["store"]``: ``"django"`` or ``{"type": "django", ...}``.

    Raises:
        ConfigError: at ``where`` (``CONSUMER_AUTH.store.poll_interval: ...``).
    """
    options = {"type": "django"} if value == "django" else expect_mapping(value, where)
    reject_unknown(options, _OPTIONS, where)
    database = options.get("database")
    if database is not None and not isinstance(database, str):
        raise ConfigError(f"{where}.database", f"expected a database alias, got {describe(database)}")
    rehash = options.get("rehash", True)
    if not isinstance(rehash, bool):
        raise ConfigError(f"{where}.rehash", f"expected a boolean, got {describe(rehash)}")
    poll = options.get("poll_interval")
    try:
        return DjangoStore(
            database=database,
            poll_interval=None if poll is None else expect_number(poll, "poll_interval"),
            rehash=rehash,
        )
    except ConfigError as error:
        raise error.within(where) from None


def follow_rehashes(watcher: StoreWatcher | None) -> None:
    """Give a gateway following a :class:`DjangoStore` (with ``rehash``) the store's ``on_rehash``."""
    if watcher is None:
        return
    store, gateway = watcher.store, watcher.gateway
    if isinstance(store, DjangoStore) and store.rehash and gateway.on_rehash is None:
        gateway.on_rehash = store.save_rehash
