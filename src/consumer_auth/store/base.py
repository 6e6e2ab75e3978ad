"""What every consumer store provides: snapshots to serve from and, for writable stores, resources."""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from consumer_auth.config import GatewayConfig
from consumer_auth.sansio.consumers import Consumer, ConsumerGroup
from consumer_auth.sansio.routing import Route, Service

__all__ = ["KINDS", "Resource", "Snapshot", "Store", "WritableStore"]

KINDS = ("consumers", "credentials", "services", "routes", "consumer_groups")
"""The kinds of resources a writable store holds (a credential's key is ``consumer/id``)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a gateway serves from, as read from a store at one revision.

    ``config`` is the whole validated configuration when the store is a configuration file: its
    gateway-wide settings (``profile``, ``unmatched``, the verification cache) apply when a gateway is
    built from it, and take effect only at a restart afterwards.
    """

    revision: Hashable
    consumers: tuple[Consumer, ...]
    routes: tuple[Route, ...] = ()
    services: tuple[Service, ...] = ()
    config: GatewayConfig | None = None
    consumer_groups: tuple[ConsumerGroup, ...] = ()


@dataclass(frozen=True, slots=True)
class Resource:
    """One stored resource: its kind, key, document and the revisions that created and last changed it.

    Security note: ``document`` holds password *hashes*; show it through
    :func:`consumer_auth.store.redact` only.
    """

    kind: str
    key: str
    document: Mapping[str, Any] = field(repr=False)
    created: int
    modified: int


@runtime_checkable
class Store(Protocol):
    """A source of snapshots that a :class:`~consumer_auth.store.StoreWatcher` keeps a gateway in step with.

    Every method may block (disk, network); none is ever called while a request waits.
    """

    name: str
    """How the store is shown in logs (a URL without its password)."""

    default_poll_interval: float
    """Seconds between revision checks when the watcher is given none."""

    def load(self) -> Snapshot:
        """Read and validate everything.

        Raises:
            ConfigError: the content is invalid.
            StoreError: it cannot be read (:class:`~consumer_auth.StoreUnavailableError` when unreachable).
        """
        ...

    def revision(self) -> Hashable:
        """A cheap value that changes whenever the content changes."""
        ...

    def wait_for_change(self, timeout: float, wake: threading.Event) -> None:
        """Block until the content may have changed, ``wake`` is set, or ``timeout`` seconds pass."""
        ...

    def after_fork(self) -> None:
        """Forget connections inherited from a parent process (called in a forked child)."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


@runtime_checkable
class WritableStore(Store, Protocol):
    """A store that the admin API and the ``consumer-auth consumers`` commands can change.

    Every write is validated against the whole content before it is committed (a duplicate credential
    username or a route naming a missing service is refused), stores clear passwords as argon2id
    hashes, and advances the revision that gateways watch.
    """

    def list_resources(self, kind: str, parent: str | None = None) -> list[Resource]:
        """Every resource of a kind, by key (credentials of one consumer with ``parent``)."""
        ...

    def get_resource(self, kind: str, key: str) -> Resource | None:
        """One resource, or ``None``."""
        ...

    def put_resource(self, kind: str, key: str, document: Mapping[str, Any]) -> tuple[Resource, bool]:
        """Create or replace a resource; returns it and whether it was created.

        Raises:
            ConfigError: the document, or the content with it, is invalid (nothing is changed).
        """
        ...

    def put_resources(
        self, items: Iterable[tuple[str, str, Mapping[str, Any]]]
    ) -> list[tuple[Resource, bool]]:
        """Create or replace several resources in one transaction: all are written, or none."""
        ...

    def delete_resource(self, kind: str, key: str) -> bool:
        """Delete a resource (a consumer with its credentials); ``False`` if there was none.

        Raises:
            ConfigError: the content without it would be invalid (a service routes still use).
        """
        ...
