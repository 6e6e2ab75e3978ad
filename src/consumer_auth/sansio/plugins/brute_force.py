"""Brute-force protection of the ``basic-auth`` plugin: the limits, and what they mean for one attempt.

This part is sans-IO: it says which failure counters an attempt touches and what a locked client gets
back (429 ``Too many failed attempts`` with ``Retry-After``). The counts themselves live in a
:class:`~consumer_auth.failures.FailureStore` (in memory, or Redis to share them between processes).

Counting rules (see ``docs/security.md``):

- only credential failures count (an unknown username or a wrong password: cases 4 and 5 of the
  SPEC); a missing or malformed header never runs a hash and never counts;
- every failure counts once per *subject*: the credential username and the client address (IPv6
  clients by their /64 network), unless ``count_by`` names only one of them;
- once a subject has ``max_failures`` failures within ``window`` seconds (counted from its first
  failure), every attempt with credentials for that username or from that address answers 429 for
  ``lockout`` seconds, before any password is checked, whether the password is right or not;
- unknown usernames are counted and locked exactly like known ones, so a 429 reveals nothing about
  which usernames exist.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from consumer_auth.sansio._validate import (
    describe,
    expect_choice,
    expect_int,
    expect_mapping,
    expect_number,
    expect_str_list,
    fail,
    reject_unknown,
)
from consumer_auth.sansio.decision import Reject, json_reject

__all__ = ["COUNT_BY", "BruteForce", "BruteForceCheck", "client_subject", "locked_reject"]

COUNT_BY = ("username", "client")
"""What failures can be counted by: the credential username, the client address."""

_FIELDS = ("max_failures", "window", "lockout", "count_by")
_SHORTEST = 0.001  # seconds; stores keep times in milliseconds


def _duration(value: object, path: str) -> float:
    seconds = expect_number(value, path)
    if seconds < _SHORTEST:
        fail(path, f"expected at least {_SHORTEST} seconds, got {describe(value)}")
    return seconds


@dataclass(frozen=True, slots=True)
class BruteForce:
    """Limits on failed logins for a ``basic-auth`` plugin (opt-in: ``brute_force:`` in its config).

    Args:
        max_failures: Failures a subject may have within ``window`` before it is locked out.
        window: Seconds, from a subject's first failure, in which its failures add up (default 60).
        lockout: Seconds a locked subject gets 429 ``Too many failed attempts`` (default 300).
        count_by: Subjects to count failures by: ``"username"`` (the credential username a client
            tried) and/or ``"client"`` (its address). Default: both.

    Security note: counting by username lets anyone who knows a username lock its owner out for
    ``lockout`` seconds; counting only by client leaves a distributed guesser unchecked. Both is the
    default; see ``docs/security.md``.

    Example:
        >>> BruteForce(max_failures=5, window=60, lockout=300).count_by
        ('username', 'client')
    """

    max_failures: int
    window: float = 60.0
    lockout: float = 300.0
    count_by: tuple[str, ...] = COUNT_BY

    def __post_init__(self) -> None:
        expect_int(self.max_failures, "max_failures", minimum=1)
        object.__setattr__(self, "window", _duration(self.window, "window"))
        object.__setattr__(self, "lockout", _duration(self.lockout, "lockout"))
        subjects = expect_str_list(self.count_by, "count_by")
        for index, subject in enumerate(subjects):
            expect_choice(subject, f"count_by[{index}]", COUNT_BY)
        if len(set(subjects)) != len(subjects):
            fail("count_by", f"expected each of {', '.join(COUNT_BY)} at most once")
        object.__setattr__(self, "count_by", tuple(subjects))

    @classmethod
    def from_config(cls, value: object) -> BruteForce:
        """Build from a configuration mapping (errors are relative to ``brute_force``)."""
        if isinstance(value, BruteForce):
            return value
        config = expect_mapping(value, "")
        reject_unknown(config, _FIELDS, "")
        if "max_failures" not in config:
            fail("max_failures", "required")
        return cls(**config)

    def compile(self) -> BruteForceCheck:
        """The check a route runs with these limits."""
        return BruteForceCheck(self)


def _digest(text: str) -> str:
    # Usernames are hashed: a store never holds what a client typed (sometimes a password, by mistake).
    raw = text.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(raw, digest_size=16, person=b"ca-bf-user").hexdigest()


@lru_cache(maxsize=4096)
def client_subject(address: str) -> str:
    """How a client address is counted: an IP as text, an IPv6 address by its /64 network.

    One IPv6 host usually holds a whole /64, so counting single IPv6 addresses would not stop it.
    Anything that is not an IP address (a Unix socket path) is hashed.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "x" + _digest(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@lru_cache(maxsize=512)
def locked_reject(retry_after: int) -> Reject:
    """The 429 a locked-out subject gets, telling it when to try again (whole seconds, at least 1)."""
    return json_reject(
        429,
        "message",
        "Too many failed attempts",
        ("Retry-After", str(retry_after)),
        reason="too_many_failures",
    )


class BruteForceCheck:
    """Compiled limits: the store keys of an attempt and the answer when they are locked.

    Keys start with a tag of the limits, so routes with the same limits share their counts and routes
    with different limits count apart.
    """

    __slots__ = ("by_client", "by_username", "limits", "tag")

    def __init__(self, limits: BruteForce) -> None:
        self.limits = limits
        self.by_username = "username" in limits.count_by
        self.by_client = "client" in limits.count_by
        self.tag = f"bf:{limits.max_failures}/{limits.window:g}/{limits.lockout:g}/{''.join(s[0] for s in limits.count_by)}"

    def keys(self, username: str, client: str | None) -> tuple[str, ...]:
        """The subjects one attempt counts against (store keys, without the store's own prefix)."""
        keys: list[str] = []
        if self.by_username:
            keys.append(f"{self.tag}:u:{_digest(username)}")
        if self.by_client and client is not None:
            keys.append(f"{self.tag}:c:{client_subject(client)}")
        return tuple(keys)

    @staticmethod
    def reject(retry_after: float) -> Reject:
        """The 429 for a lock that ends in ``retry_after`` seconds."""
        return locked_reject(max(1, math.ceil(retry_after)))


def brute_force_from(value: BruteForce | Mapping[str, object] | None) -> BruteForce | None:
    """Accept a :class:`BruteForce`, a mapping of its fields, or ``None``."""
    if value is None or isinstance(value, BruteForce):
        return value
    return BruteForce.from_config(value)
