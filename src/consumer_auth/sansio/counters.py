"""Request counters of the ``limit-count`` plugin: what a counter is asked, and the in-memory counter.

A :class:`Counter` answers one question, :meth:`~Counter.incoming`: count one request against a key in a
fixed window that starts with the key's first request, and say how many requests the window holds now
and how long it has left. :class:`MemoryCounter` counts in this process (``policy: local``); the Redis
counter, shared between processes and machines (``policy: redis``), is
:class:`consumer_auth.counters.RedisCounter`. :class:`Counters` holds a gateway's counters.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from consumer_auth.errors import ConfigError

from ._validate import expect_int

__all__ = ["Counter", "Counters", "MemoryCounter", "RedisFactory", "RedisTarget"]


class Counter(Protocol):
    """What the ``limit-count`` plugin needs from a counter."""

    blocking: ClassVar[bool]
    """True when calls wait on the network: an event loop then calls them from a worker thread."""

    def incoming(self, key: str, window: float) -> tuple[int, float] | None:
        """Count one request against ``key``, in a window of ``window`` seconds from its first request.

        Returns:
            ``(requests in the window so far, this one included; seconds until the window ends)``, or
            ``None`` when the counter cannot answer (the request is then let through uncounted).
        """
        ...


class MemoryCounter:
    """Request counts in this process's memory (each process of a multi-process server counts alone).

    Memory is bounded: at most ``max_entries`` keys are counted at once. A window that has ended is
    forgotten when its key comes again or when it is the oldest; past the bound, the oldest window is
    forgotten first (its key then starts a new window), so a flood of new keys cannot grow memory.

    Args:
        max_entries: How many keys to count at most (100,000 by default: about 28 MB, some 280 bytes
            for a key of 45 characters).
        clock: Seconds from a monotonic clock (tests pass a fake one).

    Example:
        >>> counter = MemoryCounter()
        >>> counter.incoming("lc:route:json|192.0.2.1", 60.0)
        (1, 60.0)
    """

    blocking: ClassVar[bool] = False

    def __init__(self, *, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = expect_int(max_entries, "max_entries", minimum=1)
        self._clock = clock
        # key -> (window end, the window's request numbers), in the order the windows started.
        self._entries: dict[str, tuple[float, Iterator[int]]] = {}
        self._lock = threading.Lock()

    def incoming(self, key: str, window: float) -> tuple[int, float]:
        now = self._clock()
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            return self._start(key, window, now)
        # A request in a running window takes the next number without a lock: next() on
        # itertools.count is one step under the interpreter lock, so threads never share a number.
        end, numbers = entry
        return next(numbers), end - now

    def _start(self, key: str, window: float, now: float) -> tuple[int, float]:
        """Count a request at ``now`` in a new window of ``key``, unless another thread just started one.

        A new window has exactly ``window`` seconds left (``(now + window) - now`` may round above it).
        """
        with self._lock:
            entries = self._entries
            entry = entries.get(key)
            if entry is not None and entry[0] > now:
                return next(entry[1]), entry[0] - now
            if entry is not None:
                del entries[key]  # its new window goes to the end: the order stays that of the starts
            numbers = itertools.count(1)
            entries[key] = (now + window, numbers)
            if len(entries) > self.max_entries:
                del entries[next(iter(entries))]  # the oldest window (only changed under the lock)
            return next(numbers), window

    def __len__(self) -> int:
        """How many keys are counted (windows that ended but were not forgotten yet included)."""
        return len(self._entries)

    def __repr__(self) -> str:
        return f"MemoryCounter(max_entries={self.max_entries})"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where a ``policy: redis`` plugin counts: a Redis server and a key prefix (compared by value, so
    plugins with the same target share one client).

    ``url`` and ``password`` are never shown by ``repr``.
    """

    url: str = field(repr=False)
    password: str | None = field(default=None, repr=False)
    username: str | None = None
    timeout: float = 1.0
    key_prefix: str = "consumer_auth:"


RedisFactory = Callable[[RedisTarget], Counter]


class Counters:
    """The counters of one gateway: :attr:`memory` for ``policy: local``, and one Redis counter per
    :class:`RedisTarget` for ``policy: redis`` (made by ``redis``, given by :class:`consumer_auth.Gateway`).

    Attributes:
        memory: The in-memory counter every ``policy: local`` plugin of the gateway counts in (settable,
            e.g. to a :class:`MemoryCounter` with a fake clock or another bound).
    """

    __slots__ = ("_lock", "_redis", "_redis_factory", "memory")

    def __init__(self, memory: MemoryCounter | None = None, redis: RedisFactory | None = None) -> None:
        self.memory: Counter = memory if memory is not None else MemoryCounter()
        self._redis_factory = redis
        self._redis: dict[RedisTarget, Counter] = {}
        self._lock = threading.Lock()

    @property
    def reach_redis(self) -> bool:
        """Whether this gateway can make Redis counters (a bare sans-IO gateway, or one compiled only to
        check a configuration, cannot)."""
        return self._redis_factory is not None

    def redis(self, target: RedisTarget) -> Counter:
        """The Redis counter of ``target`` (one per target; nothing connects before the first request).

        Raises:
            ConfigError: at ``policy`` when this gateway cannot reach Redis (a bare sans-IO gateway).
        """
        with self._lock:
            found = self._redis.get(target)
            if found is None:
                if self._redis_factory is None:
                    raise ConfigError(
                        "policy", "'redis' needs consumer_auth.Gateway (the sans-IO gateway has no Redis)"
                    )
                found = self._redis[target] = self._redis_factory(target)
            return found

    def __repr__(self) -> str:
        return f"Counters(memory={self.memory!r}, redis={len(self._redis)})"
