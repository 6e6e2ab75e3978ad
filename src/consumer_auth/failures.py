"""Where brute-force failure counts live: in this process's memory, or in Redis (shared).

A :class:`FailureStore` answers two questions for the gateway, both keyed by the subjects of one
attempt (see :mod:`consumer_auth.sansio.plugins.brute_force`):

- :meth:`~FailureStore.retry_after`: is any of these subjects locked out, and until when? (asked before
  a password is checked);
- :meth:`~FailureStore.add_failure`: count one failure against each subject, locking those that reach
  the limit (told after a wrong password or an unknown username).

:class:`MemoryFailureStore` keeps the counts of one process. :class:`RedisFailureStore` (the ``redis``
extra) shares them between every process and machine that uses the same Redis and key prefix; each
update is one atomic Lua script. Both fail open: if Redis cannot be reached, passwords are still
checked, failures are not counted, and a warning is logged (at most once per outage).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ._redis import RedisLink
from .sansio._validate import expect_choice, expect_mapping, expect_str, reject_unknown
from .sansio.failures import LOGGER, BruteForce, FailureStore, MemoryFailureStore

__all__ = ["LOGGER", "FailureStore", "MemoryFailureStore", "RedisFailureStore", "store_from_config"]

# KEYS: counter 1, lock 1, counter 2, lock 2, ...; ARGV: max_failures, window ms, lockout ms.
# Returns the 1-based positions of the subjects this failure locked.
_ADD_FAILURE = """
local locked = {}
local limit = tonumber(ARGV[1])
for i = 1, #KEYS, 2 do
  local n = redis.call('INCR', KEYS[i])
  if n == 1 then redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
  if n >= limit then
    redis.call('SET', KEYS[i + 1], '1', 'PX', ARGV[3])
    redis.call('DEL', KEYS[i])
    locked[#locked + 1] = (i + 1) / 2
  end
end
return locked
"""


class RedisFailureStore:
    """Failure counts in Redis, shared by every gateway process that uses the same server and prefix.

    Needs the ``redis`` extra (``pip install 'consumer-auth[redis]'``). Nothing connects until the
    first attempt on a route with ``brute_force``. Each failure is one atomic Lua script (``INCR``,
    ``PEXPIRE`` on the first failure of a window, ``SET ... PX`` of the lock), each check one pipelined
    round of ``PTTL``; keys are ``<key_prefix><limits>:u:<hash of the username>`` and
    ``...:c:<address>``, with ``:n`` (count) and ``:lock`` suffixes. A single Redis server (or a
    primary with replicas) is expected, not Redis Cluster.

    Args:
        url: ``redis://host:port/db`` (``rediss://`` for TLS; a password may be given in the URL).
        key_prefix: Put before every key, so several gateways (or tests) can share one Redis.
        timeout: Seconds to wait for Redis to connect or answer before failing open.
        retry_interval: Seconds to stop asking Redis after it failed (requests then go on uncounted).
        client: An existing ``redis.Redis`` client to use instead of ``url``.

    Security note: when Redis is unreachable the store fails open (passwords are still verified, but
    failures are not counted) and logs a warning on ``consumer_auth.brute_force``; the URL's password
    is never logged.
    """

    blocking: ClassVar[bool] = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        key_prefix: str = "consumer_auth:",
        timeout: float = 0.5,
        retry_interval: float = 1.0,
        client: Any = None,
    ) -> None:
        self._link = RedisLink(
            url,
            script=_ADD_FAILURE,
            logger=LOGGER,
            what="brute-force store",
            down="failures are not counted",
            up="failures are counted",
            timeout=timeout,
            retry_interval=retry_interval,
            client=client,
        )
        self.key_prefix = expect_str(key_prefix, "key_prefix", nonempty=False)

    @property
    def timeout(self) -> float:
        """Seconds to wait for Redis to connect or answer before failing open."""
        return self._link.timeout

    @property
    def retry_interval(self) -> float:
        """Seconds to stop asking Redis after it failed."""
        return self._link.retry_interval

    def retry_after(self, keys: Sequence[str]) -> float:
        link = self._link
        if not keys or not link.available():
            return 0.0
        try:
            pipe = link.client().pipeline(transaction=False)
            for key in keys:
                pipe.pttl(f"{self.key_prefix}{key}:lock")
            remaining = pipe.execute()
        except link.errors as error:
            link.failed(error)
            return 0.0
        link.recovered()
        return max((int(ms) for ms in remaining if int(ms) > 0), default=0) / 1000

    def add_failure(self, keys: Sequence[str], limits: BruteForce) -> tuple[str, ...]:
        link = self._link
        if not keys or not link.available():
            return ()
        names: list[str] = []
        for key in keys:
            names += (f"{self.key_prefix}{key}:n", f"{self.key_prefix}{key}:lock")
        arguments = (
            limits.max_failures,
            max(1, round(limits.window * 1000)),
            max(1, round(limits.lockout * 1000)),
        )
        try:
            positions = link.script(keys=names, args=arguments)
        except link.errors as error:
            link.failed(error)
            return ()
        link.recovered()
        return tuple(keys[int(position) - 1] for position in positions)

    def close(self) -> None:
        """Close the connections this store opened (a client passed in is left open)."""
        self._link.close()

    def __repr__(self) -> str:
        return f"RedisFailureStore(key_prefix={self.key_prefix!r})"


_MEMORY = ("type", "max_entries", "max_locks")
_REDIS = ("type", "url", "key_prefix", "timeout", "retry_interval")


def store_from_config(value: object) -> FailureStore:
    """Build a store from the ``brute_force_store:`` mapping (errors are relative to it).

    ``{type: memory, max_entries: 100000, max_locks: 100000}`` (the default) or
    ``{type: redis, url: "redis://127.0.0.1:6379/0", key_prefix: "consumer_auth:", timeout: 0.5}``.
    """
    config: Mapping[str, Any] = expect_mapping(value, "")
    kind = expect_choice(config.get("type", "memory"), "type", ("memory", "redis"))
    options = {key: item for key, item in config.items() if key != "type"}
    if kind == "memory":
        reject_unknown(config, _MEMORY, "")
        return MemoryFailureStore(**options)
    reject_unknown(config, _REDIS, "")
    return RedisFailureStore(**options)
