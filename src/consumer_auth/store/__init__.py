"""Consumer stores: where a running gateway takes its consumers (and routes) from, kept current.

::

    from consumer_auth import Gateway

    # routes fixed in a file, consumers from PostgreSQL, followed live
    gateway = Gateway.from_file("routes.yaml", store="postgresql://db.internal/gateway")

Three stores, one interface (:class:`Store`); see ``docs/deployment.md`` for which to use when:

- :class:`FileStore` — a YAML/JSON/TOML configuration file, reloaded when it changes (read-only);
- :class:`SQLStore` on SQLite — one file, nothing to run, for the processes of one machine;
- :class:`SQLStore` on PostgreSQL — for many machines, changes pushed by ``LISTEN/NOTIFY``.

A :class:`StoreWatcher` applies each new revision to the gateway atomically from a background thread;
requests never wait on a store.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from consumer_auth.errors import ConfigError
from consumer_auth.sansio._validate import check_url

from ._documents import prepare, redact
from .base import KINDS, Resource, Snapshot, Store, WritableStore
from .file import FileStore
from .watcher import StoreWatcher

if TYPE_CHECKING:
    from .sql import SQLStore

__all__ = [
    "KINDS",
    "FileStore",
    "Resource",
    "SQLStore",
    "Snapshot",
    "Store",
    "StoreWatcher",
    "WritableStore",
    "open_store",
    "prepare",
    "redact",
]

_FILE_SUFFIXES = (".yaml", ".yml", ".json", ".toml")


def open_store(url: str | os.PathLike[str], *, create: bool = False) -> Store:
    """Open a store from a URL or a path.

    - ``sqlite:///path/consumers.db`` — a SQLite file: reading one that does not exist is a
      :class:`~consumer_auth.StoreError` naming the path, unless ``create`` (``sqlite:///x.db`` is
      relative to the current directory, ``sqlite:////var/lib/x.db`` absolute); a write creates it;
    - ``postgresql://user@host:5432/db`` (``?schema=NAME`` for a schema of its own) — PostgreSQL;
    - ``gateway.yaml``, ``file:///etc/gateway.yaml`` (``.yaml``, ``.yml``, ``.json``, ``.toml``) — a
      watched configuration file.

    Raises:
        ConfigError: at ``store`` when the URL names no supported store, or a PostgreSQL URL names no
            host (the message never repeats the URL, which may hold a password).
        StoreError: the URL is refused by the store itself (an in-memory SQLite database).
    """
    text = os.fspath(url)
    scheme = text.partition(":")[0].lower() if "://" in text else ""
    if scheme.startswith(("sqlite", "postgresql", "postgres")):
        from .sql import SQLStore

        if scheme.startswith("postgres") and "host=" not in text.partition("?")[2]:
            check_url(text, "store", (scheme,))
        return SQLStore(text, create=create)
    if scheme == "file":
        text = text[len("file://") :]
        scheme = ""
    if not scheme and Path(text).suffix.lower() in _FILE_SUFFIXES:
        return FileStore(text)
    raise ConfigError(
        "store", "expected a store URL: sqlite:///FILE, postgresql://HOST/DB, or a .yaml, .json or .toml file"
    )


def __getattr__(name: str) -> object:
    # SQLAlchemy is imported only when a SQL store is used.
    if name == "SQLStore":
        from .sql import SQLStore

        return SQLStore
    raise AttributeError(name)
