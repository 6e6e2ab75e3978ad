"""Where slow password verifications run: bounded, fair between logins, and below request handling.

The core hands the adapters a :class:`~consumer_auth.decision.Pending` for every slow hash it must really
run (cache hits and clear passwords never get here). Both adapters run those under the same rules:

- **lanes**: the presented login picks one of :data:`LANES` lanes (by a per-process randomized hash, so a
  client cannot aim at another login's lane); a lane runs one verification at a time, in arrival order.
  A flood of wrong passwords for one login queues in its own lane, while other logins go ahead. Requests
  that waited behind a right password find it in the verification cache and skip the hash.
- **a bound**: at most ``workers`` verifications run at once; at most one per lane waits for a worker.
- **priority** (Linux, ASGI pool): worker threads run at a lower CPU priority (``nice`` +10), so under a
  flood the event loop keeps serving requests that need no hash.
- **admission** (in the core, before any of the above): a gateway lets at most
  ``max_pending_per_client`` logins have a slow verification pending (waiting or running) per client
  address (IPv6 by /64, as brute-force limits count) and ``max_pending`` in all (:class:`Admission`);
  requests of one client for the same login share one place. A request
  over either bound is answered at once: 503 with ``Retry-After`` (:data:`BUSY`), instead of queueing.
  Unknown usernames (their decoy hash) count like any other.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from ._validate import expect_int, expect_mapping, reject_unknown
from .decision import json_reject

if TYPE_CHECKING:
    from .decision import Decision, Pending

LANES = 64
"""How many lanes slow verifications are spread over (per process)."""

WORKER_NICE = 10
"""How much lower than the process the verification threads run (Linux ``nice`` increment)."""


def default_workers() -> int:
    """Slow verifications that may run at once: half the CPUs (an argon2id check already uses several)."""
    return max(1, (os.cpu_count() or 2) // 2)


def lane_of(login: str | None) -> int:
    """The lane of a presented login (``hash`` of a ``str`` is randomized per process)."""
    return hash(login) % LANES


def lower_priority(increment: int = WORKER_NICE) -> None:
    """Lower the calling thread's CPU priority (Linux only; threads it starts inherit it)."""
    if increment <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
    except OSError:  # not permitted here: run at normal priority
        pass


class ThreadedVerifier:
    """Runs slow verifications in the calling threads (WSGI), under the lane and worker bounds.

    Args:
        workers: At most this many verifications at once (default: :func:`default_workers`).
    """

    __slots__ = ("_lanes", "_slots", "workers")

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or default_workers()
        self._slots = threading.BoundedSemaphore(self.workers)
        self._lanes = tuple(threading.Lock() for _ in range(LANES))

    def run(self, pending: Pending) -> Decision:
        """Verify, waiting for the login's lane and a free worker slot first."""
        with self._lanes[lane_of(pending.login)], self._slots:
            return pending.run()


_threaded: ThreadedVerifier | None = None
_threaded_lock = threading.Lock()


def threaded_verifier() -> ThreadedVerifier:
    """The process-wide :class:`ThreadedVerifier`."""
    global _threaded
    if _threaded is None:
        with _threaded_lock:
            if _threaded is None:
                _threaded = ThreadedVerifier()
    return _threaded


BUSY = json_reject(
    503, "error_msg", "503 Service Unavailable", ("Retry-After", "1"), reason="verification_busy"
)
"""The answer when a client (or everyone) has too many slow verifications pending."""


@dataclass(frozen=True, slots=True)
class VerificationLimits:
    """How many slow password verifications may be pending at once (``verification:`` in the config).

    A verification is pending from the moment the gateway decides it must run (a slow hash that the
    verification cache does not remember, or a decoy for an unknown username) until it is done.

    Args:
        max_pending: In all, per gateway.
        max_pending_per_client: Per client address (an IPv6 client by its /64 network).
    """

    max_pending: int = 64
    max_pending_per_client: int = 4

    def __post_init__(self) -> None:
        expect_int(self.max_pending, "max_pending", minimum=1)
        expect_int(self.max_pending_per_client, "max_pending_per_client", minimum=1)

    @classmethod
    def from_config(cls, value: object) -> VerificationLimits:
        """Build from the ``verification:`` mapping (errors are relative to it)."""
        if isinstance(value, VerificationLimits):
            return value
        config: Mapping[str, Any] = expect_mapping(value, "")
        reject_unknown(config, [field.name for field in fields(cls)], "")
        return cls(**config)


_Key = tuple[str | None, str | None]  # (client subject, presented login)


class Ticket:
    """One admitted verification; :meth:`release` (or dropping it unused) gives its place back."""

    __slots__ = ("_admission", "_key")

    def __init__(self, admission: Admission, key: _Key) -> None:
        self._admission: Admission | None = admission
        self._key = key

    def release(self) -> None:
        """Give the place back (once; later calls do nothing)."""
        admission, self._admission = self._admission, None
        if admission is not None:
            admission.leave(self._key)

    def __del__(self) -> None:
        # A decision dropped without running (its client went away first) must not keep its place.
        # The collector may run this while the admission's lock is held: hand the place back without
        # the lock, the next enter() takes it into account.
        admission, self._admission = self._admission, None
        if admission is not None:
            admission.dropped.append(self._key)


class Admission:
    """Counts pending slow verifications per client subject and in all, under :class:`VerificationLimits`.

    The unit is a (client, login) pair: requests of one client for the same login share one place
    (they wait in one lane, and after a success find it in the verification cache), so a browser's
    burst of first requests is never refused, while each made-up username takes a place of its own.
    """

    __slots__ = ("_by_client", "_keys", "_lock", "dropped", "limits")

    def __init__(self, limits: VerificationLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._keys: dict[_Key, int] = {}  # pending requests per (client, login)
        self._by_client: dict[str, int] = {}  # distinct logins pending per client
        self.dropped: deque[_Key] = deque()
        """Keys of tickets dropped unused (appending needs no lock)."""

    def enter(self, subject: str | None, login: str | None = None) -> Ticket | None:
        """A ticket for one more verification of ``login`` from ``subject``, or ``None`` when a bound
        is reached."""
        limits = self.limits
        key = (subject, login)
        with self._lock:
            while self.dropped:
                self._leave(self.dropped.popleft())
            held = self._keys.get(key)
            if held is not None:
                self._keys[key] = held + 1
                return Ticket(self, key)
            if len(self._keys) >= limits.max_pending:
                return None
            if subject is not None:
                count = self._by_client.get(subject, 0)
                if count >= limits.max_pending_per_client:
                    return None
                self._by_client[subject] = count + 1
            self._keys[key] = 1
        return Ticket(self, key)

    def leave(self, key: _Key) -> None:
        """One verification of ``key`` is done."""
        with self._lock:
            self._leave(key)

    def _leave(self, key: _Key) -> None:
        left = self._keys.get(key, 1) - 1
        if left > 0:
            self._keys[key] = left
            return
        self._keys.pop(key, None)
        subject = key[0]
        if subject is not None:
            count = self._by_client.get(subject, 1) - 1
            if count > 0:
                self._by_client[subject] = count
            else:
                self._by_client.pop(subject, None)

    @property
    def pending(self) -> int:
        """Distinct (client, login) pairs with a verification pending now."""
        return len(self._keys)
