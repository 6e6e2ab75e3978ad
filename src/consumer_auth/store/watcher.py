"""Keep a gateway in step with a store from a background thread, never on the request path."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Hashable
from typing import TYPE_CHECKING

from consumer_auth._words import counted
from consumer_auth.errors import ConfigError, StoreError

from .base import Snapshot, Store

if TYPE_CHECKING:
    from consumer_auth.sansio.gateway import Gateway

__all__ = ["StoreWatcher", "logger", "shown"]

logger = logging.getLogger("consumer_auth.store")
"""Where store events are logged: a change of revision (INFO), invalid content (ERROR), the store
becoming unreachable and reachable again (WARNING, once per change of state)."""


def shown(revision: Hashable) -> str:
    """A revision as a log line shows it: ``revision 42`` (SQL), or a file's modification time and size."""
    describe = getattr(revision, "describe", None)
    return str(describe()) if callable(describe) else f"revision {revision}"


class StoreWatcher:
    """Applies each new revision of a store to a gateway, atomically, from a daemon thread.

    Usually made by :meth:`Gateway.attach <consumer_auth.Gateway.attach>` or
    :meth:`Gateway.from_store <consumer_auth.Gateway.from_store>`.

    The thread waits for a change (a PostgreSQL notification, or ``poll_interval`` seconds), compares
    the store's revision with the one in force, and when it differs loads a full snapshot and swaps it
    into the gateway in one step. Requests only ever read the snapshot in force.

    When the store cannot be reached the gateway keeps its snapshot; the watcher logs a warning once,
    retries after 0.25 s, doubling up to ``max_backoff`` seconds, logs once more when the store is back,
    and catches up with every change made meanwhile. A revision whose content is invalid is logged (the
    :class:`~consumer_auth.ConfigError`, which never holds a secret) and skipped until the next one.

    In a process forked after the watcher started (a pre-forking server), the child starts its own
    thread with fresh connections.

    What it takes from the store: the consumers, and with ``routes=True`` the routes and services too;
    ``consumers=False`` leaves the consumers alone (a routes file next to a consumer store, as
    ``consumer-auth serve --config FILE --store URL`` follows its ``--config``). :meth:`wake` checks at
    once (``serve`` wakes its watchers on SIGHUP; its ``--config`` file is given a ``poll_interval`` of
    ``threading.TIMEOUT_MAX``, so that waking it is the only time it is read again).

    Attributes:
        revision: The store revision in force.
        available: Whether the store answered the last check.
    """

    def __init__(
        self,
        gateway: Gateway,
        store: Store,
        *,
        routes: bool = False,
        consumers: bool = True,
        poll_interval: float | None = None,
        max_backoff: float = 30.0,
    ) -> None:
        self.gateway = gateway
        self.store = store
        self.routes = routes
        self.consumers = consumers
        self.poll_interval = poll_interval or store.default_poll_interval
        self.max_backoff = max_backoff
        self.revision: Hashable = None
        self.available = True
        self._bad: Hashable = None
        self._stopped = False
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._settings_warned: Hashable = None

    # -- life cycle ---------------------------------------------------------------------------------

    def start(self, snapshot: Snapshot | None = None) -> None:
        """Apply the store's content now (or ``snapshot``, already read), then follow it in the background.

        Raises:
            ConfigError: the content is invalid.
            StoreError: the store cannot be read.
        """
        self._apply(snapshot if snapshot is not None else self.store.load())
        self._spawn()
        ref = weakref.ref(self)

        def in_child() -> None:
            watcher = ref()
            if watcher is not None and not watcher._stopped:
                watcher._after_fork()

        os.register_at_fork(after_in_child=in_child)

    def _spawn(self) -> None:
        self._thread = threading.Thread(target=self._run, name="consumer-auth-store", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        # Only the forking thread survives a fork: locks it did not hold may look held forever.
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.gateway._lock = threading.Lock()
        self.store.after_fork()
        self._spawn()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop following the store and close its connections (the gateway keeps its snapshot)."""
        self._stopped = True
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.store.close()

    def wake(self) -> None:
        """Check the store now instead of at the end of the current wait (after a local write)."""
        self._wake.set()

    # -- the loop -----------------------------------------------------------------------------------

    def _run(self) -> None:
        delay = 0.25
        while not self._stopped:
            try:
                self.store.wait_for_change(self.poll_interval, self._wake)
                if self._stopped:
                    break
                self._wake.clear()
                self.check()
            except StoreError as error:
                self._down(error)
            except Exception:  # a bug must not stop the gateway from following its store
                logger.exception("%s: unexpected error while following the store", self.store.name)
                self._down(None)
            else:
                delay = 0.25
                continue
            self._wake.wait(delay)
            delay = min(delay * 2, self.max_backoff)

    def check(self) -> bool:
        """Compare revisions and apply a new snapshot if there is one; returns whether one was applied.

        Called by the background thread; callable from any thread (a test, a command) as well.

        Raises:
            StoreError: the store cannot be read.
        """
        revision = self.store.revision()
        self._up()
        if revision == self.revision or revision == self._bad:
            return False
        try:
            self._apply(self.store.load())
        except ConfigError as error:
            self._bad = revision
            logger.error(
                "%s: invalid content (%s), still serving %s: %s",
                self.store.name,
                shown(revision),
                shown(self.revision),
                error,
            )
            return False
        return True

    def _apply(self, snapshot: Snapshot) -> None:
        with self._lock:
            self.gateway.replace(
                consumers=snapshot.consumers if self.consumers else None,
                consumer_groups=snapshot.consumer_groups if self.consumers else None,
                routes=snapshot.routes if self.routes else None,
                services=snapshot.services if self.routes else None,
            )
            self.revision = snapshot.revision
            self._bad = None
        counts = [counted(len(snapshot.consumers), "consumer")] if self.consumers else []
        if self.consumers and snapshot.consumer_groups:
            counts.append(counted(len(snapshot.consumer_groups), "consumer group"))
        if self.routes:
            counts.append(counted(len(snapshot.routes), "route"))
        logger.info("%s: %s in force (%s)", self.store.name, shown(snapshot.revision), ", ".join(counts))
        settings = snapshot.config
        changed = settings is not None and (
            settings.profile is not self.gateway.profile or settings.unmatched != self.gateway.unmatched
        )
        if changed and self._settings_warned != snapshot.revision:
            self._settings_warned = snapshot.revision
            logger.warning(
                "%s: 'profile' and 'unmatched' changes take effect at the next restart", self.store.name
            )

    def _down(self, error: StoreError | None) -> None:
        if self.available:
            self.available = False
            logger.warning(
                "%s: cannot read the store (%s); serving the last snapshot (%s), retrying with backoff",
                self.store.name,
                error if error is not None else "unexpected error",
                shown(self.revision),
            )

    def _up(self) -> None:
        if not self.available:
            self.available = True
            logger.warning("%s: the store answers again; catching up", self.store.name)
