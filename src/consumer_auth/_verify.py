"""Where slow password verifications run: bounded, fair between logins, and below request handling.

The core hands the adapters a :class:`~consumer_auth.sansio.decision.Pending` for every slow hash it must really
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
  address (IPv6 by /64, as brute-force limits count) and ``max_pending`` in all (:class:`~consumer_auth.sansio.admission.Admission`);
  requests of one client for the same login share one place. A request
  over either bound is answered at once: 503 with ``Retry-After`` (:data:`~consumer_auth.sansio.admission.BUSY`), instead of queueing.
  Unknown usernames (their decoy hash) count like any other.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sansio.decision import Decision, Pending

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
