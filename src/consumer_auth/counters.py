"""Where ``limit-count`` counts requests: this process's memory (``policy: local``) or Redis (``policy: redis``).

:class:`MemoryCounter` counts in one process, with bounded memory. :class:`RedisCounter` (the ``redis``
extra) shares the counts between every process and machine that uses the same Redis and key prefix:
each request is one atomic Lua script (``INCR``, then ``PEXPIRE`` when the key's window has just begun),
one round trip (``EVALSHA``). It fails open: if Redis cannot be reached, requests are let through
uncounted and a warning is logged on ``consumer_auth.limit_count``, once per outage.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from ._redis import RedisLink
from .sansio.counters import Counter, Counters, MemoryCounter, RedisTarget

__all__ = ["LOGGER", "Counter", "Counters", "MemoryCounter", "RedisCounter", "RedisTarget", "redis_counter"]

LOGGER = logging.getLogger("consumer_auth.limit_count")
"""Redis outages of ``limit-count`` (WARNING: when one starts and when it ends) are logged here."""

# KEYS: the counter; ARGV: the window in ms. Returns {requests in the window, ms left in it}.
_INCOMING = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""


class RedisCounter:
    """Request counts in Redis, shared by every gateway process that uses the same server and prefix.

    Needs the ``redis`` extra (``pip install 'consumer-auth[redis]'``); nothing connects before the first
    request. Keys are ``<key_prefix>lc:<count>/<time_window>:<place>|<key>``; each expires with its
    window. A single Redis server (or a primary with replicas) is expected, not Redis Cluster.

    Args:
        url: ``redis://host:port/db`` (``rediss://`` for TLS; a password may be given in the URL).
        key_prefix: Put before every key, so several gateways (or tests) can share one Redis.
        timeout: Seconds to wait for Redis to connect or answer before letting the request through.
        retry_interval: Seconds to stop asking Redis after it failed (requests then go on uncounted).
        password: The Redis password, if not in the URL (never logged).
        username: The Redis ACL user, if not in the URL.
        client: An existing ``redis.Redis`` client to use instead of ``url``.
    """

    blocking: ClassVar[bool] = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        key_prefix: str = "consumer_auth:",
        timeout: float = 1.0,
        retry_interval: float = 1.0,
        password: str | None = None,
        username: str | None = None,
        client: Any = None,
    ) -> None:
        options = {k: v for k, v in (("password", password), ("username", username)) if v is not None}
        self._link = RedisLink(
            url,
            script=_INCOMING,
            logger=LOGGER,
            what="limit-count Redis",
            down="requests are let through uncounted",
            up="requests are counted",
            timeout=timeout,
            retry_interval=retry_interval,
            client=client,
            field="policy",
            **options,
        )
        self.key_prefix = key_prefix

    def incoming(self, key: str, window: float) -> tuple[int, float] | None:
        link = self._link
        if not link.available():
            return None
        try:
            count, left = link.script(keys=[self.key_prefix + key], args=(max(1, round(window * 1000)),))
        except link.errors as error:
            link.failed(error)
            return None
        link.recovered()
        return int(count), int(left) / 1000

    def close(self) -> None:
        """Close the connections this counter opened (a client passed in is left open)."""
        self._link.close()

    def __repr__(self) -> str:
        return f"RedisCounter(key_prefix={self.key_prefix!r})"


def redis_counter(target: RedisTarget) -> Counter:
    """The Redis counter of a ``policy: redis`` plugin (what :class:`consumer_auth.Gateway` uses)."""
    return RedisCounter(
        target.url,
        key_prefix=target.key_prefix,
        timeout=target.timeout,
        password=target.password,
        username=target.username,
    )
