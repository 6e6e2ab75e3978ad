"""A configuration file (YAML, JSON or TOML) as a read-only store, watched for changes."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from consumer_auth._words import counted
from consumer_auth.config import gateway_options, load_file, parse_config
from consumer_auth.errors import ConfigError, StoreUnavailableError
from consumer_auth.sansio.gateway import Gateway, compile_routes

from .base import Snapshot

__all__ = ["FileRevision", "FileStore"]


class FileRevision(NamedTuple):
    """What tells one version of a watched file from another: modification time, size, inode, device."""

    mtime_ns: int
    size: int
    inode: int
    device: int

    def describe(self) -> str:
        """``the file of 2026-12-02 16:20:01.123 UTC (532 bytes)``, for log lines."""
        when = datetime.fromtimestamp(self.mtime_ns / 1e9, tz=UTC)
        return f"the file of {when:%Y-%m-%d %H:%M:%S}.{when.microsecond // 1000:03d} UTC ({counted(self.size, 'byte')})"


class FileStore:
    """A gateway configuration file (the SPEC §6 schema), reloaded whenever it changes.

    The file is polled (its modification time, size and inode), so it works on every platform and
    filesystem with no extra dependency. Replace the file atomically (write a new file, then rename it
    over the old one), as editors and configuration tools do; a file that changes while it is being read
    is read again on the next check.

    The whole file must be valid, exactly as for :meth:`Gateway.from_file`: when it is not, the
    watcher keeps the last good configuration and logs the :class:`~consumer_auth.ConfigError` (which
    never contains a secret).

    Args:
        path: The file; its extension (``.yaml``, ``.yml``, ``.json``, ``.toml``) chooses the parser.
        poll_interval: Default seconds between checks.
        consumers: Whether the file holds the consumers. ``False`` for a file of routes, services and
            settings whose consumers come from another store (``Gateway.from_file(path, store=...)``,
            followed with ``StoreWatcher(..., routes=True, consumers=False)``): the file must then list no
            consumers, and the rules that need them (a route's ``anonymous_consumer`` naming one) are
            left to the gateway, as at start.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, poll_interval: float = 1.0, consumers: bool = True
    ) -> None:
        self.path = Path(path)
        self.consumers = consumers
        self.name = str(self.path)
        self.default_poll_interval = poll_interval

    def _stat(self) -> FileRevision:
        try:
            found = os.stat(self.path)
        except OSError as error:
            raise StoreUnavailableError(
                f"{self.path}: cannot read the file ({error.strerror or type(error).__name__})"
            ) from None
        return FileRevision(found.st_mtime_ns, found.st_size, found.st_ino, found.st_dev)

    def revision(self) -> FileRevision:
        """The file's modification time, size, inode and device."""
        return self._stat()

    def load(self) -> Snapshot:
        """Read and validate the whole file.

        Raises:
            ConfigError: the file is invalid (or changed while being read: try again later).
            StoreUnavailableError: the file cannot be read.
        """
        for _attempt in range(3):
            before = self._stat()
            try:
                document = load_file(self.path)
            except ConfigError as error:
                if not self.path.exists():
                    raise StoreUnavailableError(str(error)) from None
                raise
            if self._stat() == before:
                break
        else:
            raise ConfigError(str(self.path), "the file keeps changing while it is read; will read it again")
        config = parse_config(document)
        if self.consumers:
            # every rule of a static configuration holds for a watched one
            Gateway(
                consumers=config.consumers, consumer_groups=config.consumer_groups, **gateway_options(config)
            )
        elif config.consumers:
            raise ConfigError(
                "consumers", "the consumers come from the store: remove them from the configuration"
            )
        elif config.consumer_groups:
            raise ConfigError(
                "consumer_groups",
                "the consumer groups come from the store: remove them from the configuration",
            )
        else:
            compile_routes(
                config.routes, config.services, config.profile, head_with_get=config.unmatched == "pass"
            )
        return Snapshot(
            revision=before,
            consumers=config.consumers,
            routes=config.routes,
            services=config.services,
            config=config,
            consumer_groups=config.consumer_groups,
        )

    def wait_for_change(self, timeout: float, wake: threading.Event) -> None:
        """Files are polled: wait ``timeout`` seconds (or until woken)."""
        wake.wait(timeout)

    def after_fork(self) -> None:
        """Nothing to forget: the file is opened afresh on each read."""

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"FileStore({self.name!r})"
