"""Brute-force failure counts: what the gateway asks of a store, and the in-memory store.

A :class:`FailureStore` answers two questions, both keyed by the subjects of one attempt (see
:mod:`consumer_auth.sansio.plugins.brute_force`): :meth:`~FailureStore.retry_after` (is any of these
subjects locked out, and until when? asked before a password is checked) and
:meth:`~FailureStore.add_failure` (count one failure against each subject, locking those that reach the
limit). :class:`MemoryFailureStore` keeps the counts of one process; the Redis store, shared between
processes, is :class:`consumer_auth.failures.RedisFailureStore`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import ClassVar, Protocol

from ._validate import expect_int

__all__ = ["LOGGER", "BruteForce", "FailureStore", "MemoryFailureStore"]


class BruteForce(Protocol):
    """The limits a store counts against (a :class:`~consumer_auth.BruteForce`)."""

    @property
    def max_failures(self) -> int: ...
    @property
    def window(self) -> float: ...
    @property
    def lockout(self) -> float: ...


LOGGER = logging.getLogger("consumer_auth.brute_force")
"""Lock-outs (WARNING) and failure-store outages (WARNING) are logged here."""


class FailureStore(Protocol):
    """What the gateway needs from a failure-count store."""

    blocking: ClassVar[bool]
    """True when calls wait on the network: an event loop then calls them from a worker thread."""

    def retry_after(self, keys: Sequence[str]) -> float:
        """Seconds until the last lock among ``keys`` ends; ``0`` when none of them is locked."""
        ...

    def add_failure(self, keys: Sequence[str], limits: BruteForce) -> tuple[str, ...]:
        """Count one failure against each key; return the keys this failure locked out."""
        ...


class _Entry:
    __slots__ = ("count", "window_end")

    def __init__(self, window_end: float) -> None:
        self.count = 0
        self.window_end = window_end


class MemoryFailureStore:
    """Failure counts in this process's memory (each process of a multi-process server counts alone).

    Counters and locks are kept apart, so that no flood of failures can push out a lock: counters are
    bounded by ``max_entries`` (the oldest forgotten first), locks by ``max_locks``, and a lock is only
    ever forgotten once it has expired. When ``max_locks`` subjects are locked at once, a further
    subject reaching its limit is not locked (its failures still count, the locks in force stay) and a
    warning is logged, once until there is room again; see ``docs/security.md``.

    Args:
        max_entries: How many failure counters to keep at most; past it, the oldest are forgotten
            first, so a flood of made-up usernames cannot grow memory without bound.
        max_locks: How many subjects may be locked out at once.
        clock: Seconds from a monotonic clock (tests pass a fake one).

    Example:
        >>> store = MemoryFailureStore()
        >>> store.retry_after(["bf:5/60/300/uc:c:192.0.2.1"])
        0.0
    """

    blocking: ClassVar[bool] = False

    def __init__(
        self,
        *,
        max_entries: int = 100_000,
        max_locks: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = expect_int(max_entries, "max_entries", minimum=1)
        self.max_locks = expect_int(max_locks, "max_locks", minimum=1)
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._locks: dict[str, float] = {}  # key -> locked until
        self._full = False
        self._lock = threading.Lock()

    def retry_after(self, keys: Sequence[str]) -> float:
        now = self._clock()
        longest = 0.0
        with self._lock:
            for key in keys:
                until = self._locks.get(key)
                if until is not None and until > now:
                    longest = max(longest, until - now)
        return longest

    def add_failure(self, keys: Sequence[str], limits: BruteForce) -> tuple[str, ...]:
        now = self._clock()
        locked: list[str] = []
        with self._lock:
            entries = self._entries
            for key in keys:
                entry = entries.get(key)
                if entry is None:
                    entry = entries[key] = _Entry(now + limits.window)
                elif entry.window_end <= now:
                    entry.count = 0
                    entry.window_end = now + limits.window
                    entries.move_to_end(key)  # keeps the order close to the order of expiry
                entry.count += 1
                if entry.count >= limits.max_failures and self._take_lock(key, now + limits.lockout, now):
                    del entries[key]
                    locked.append(key)
            while len(entries) > self.max_entries:
                entries.popitem(last=False)
        return tuple(locked)

    def _take_lock(self, key: str, until: float, now: float) -> bool:
        locks = self._locks
        if key not in locks and len(locks) >= self.max_locks:
            for expired in [k for k, end in locks.items() if end <= now]:
                del locks[expired]
            if len(locks) >= self.max_locks:
                if not self._full:
                    self._full = True
                    LOGGER.warning(
                        "brute-force store: %d subjects are locked out already (max_locks); "
                        "no further subject is locked until a lock expires",
                        len(locks),
                    )
                return False
        self._full = False
        locks[key] = until
        return True

    def __len__(self) -> int:
        """Failure counters plus locks in force."""
        now = self._clock()
        with self._lock:
            return len(self._entries) + sum(1 for until in self._locks.values() if until > now)

    def __repr__(self) -> str:
        return f"MemoryFailureStore(max_entries={self.max_entries}, max_locks={self.max_locks})"
