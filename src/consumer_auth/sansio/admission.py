"""Admission of slow password verifications: how many may be pending per client and in all.

A gateway lets at most ``max_pending_per_client`` logins have a slow verification pending (waiting or
running) per client address (IPv6 by /64, as brute-force limits count) and ``max_pending`` in all;
requests of one client for the same login share one place. A request over either bound is answered at
once with :data:`BUSY` (503 with ``Retry-After``) instead of queueing. Where the admitted verifications
then run (lanes, worker bounds, priority) is the adapters' business: :mod:`consumer_auth._verify`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ._validate import expect_int, expect_mapping, reject_unknown
from .decision import json_reject

__all__ = ["BUSY", "Admission", "Ticket", "VerificationLimits"]

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
