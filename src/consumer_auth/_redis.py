"""One Redis connection as the gateway's Redis-backed stores use it: made on first use, failing open.

The brute-force failure store and the ``limit-count`` counter both keep a :class:`RedisLink`: it builds
the ``redis.Redis`` client (and registers its Lua script) on first use, and keeps the state of an outage:
after an error, Redis is not asked again for ``retry_interval`` seconds, one warning is logged when the
outage starts and one when Redis answers again. Neither message holds the URL (it may hold a password).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .errors import ConfigError
from .sansio._validate import check_url, expect_number, expect_str

__all__ = ["RedisLink"]


class RedisLink:
    """A lazily made Redis client, its script, and whether Redis is down (see the module docstring).

    Args:
        url: ``redis://host:port/db``, ``rediss://`` or ``unix://``.
        script: The Lua script to register (``link.script(keys=..., args=...)`` runs it: ``EVALSHA``,
            loading it first when the server does not know it).
        logger: Where the outage warnings go.
        what: How the warnings name the store (``"brute-force store"``).
        down: What an outage means, for its warning (``"failures are not counted"``).
        up: What its end means (``"failures are counted"``).
        field: Where a missing ``redis`` package is reported, as a :class:`~consumer_auth.ConfigError`.
        options: More keyword arguments for ``redis.Redis.from_url`` (``password``, ``username``).
    """

    __slots__ = (
        "_client",
        "_down_until",
        "_lock",
        "_options",
        "_script",
        "_source",
        "_url",
        "down",
        "errors",
        "logger",
        "redis",
        "retry_interval",
        "timeout",
        "up",
        "what",
    )

    def __init__(
        self,
        url: str,
        *,
        script: str,
        logger: logging.Logger,
        what: str,
        down: str,
        up: str,
        timeout: float,
        retry_interval: float,
        client: Any = None,
        field: str = "type",
        **options: Any,
    ) -> None:
        try:
            import redis
        except ImportError:
            raise ConfigError(
                field, "the 'redis' store needs the redis package (pip install 'consumer-auth[redis]')"
            ) from None
        self.redis = redis
        self.errors: type[Exception] = redis.RedisError
        self._url = check_url(expect_str(url, "url", secret=True), "url", ("redis", "rediss", "unix"))
        self.timeout = expect_number(timeout, "timeout")
        self.retry_interval = expect_number(retry_interval, "retry_interval", positive=False)
        self.logger, self.what, self.down, self.up = logger, what, down, up
        self._options = options
        self._source = script
        self._client: Any = client
        self._script: Any = None
        self._down_until = 0.0
        self._lock = threading.Lock()

    def client(self) -> Any:
        """The ``redis.Redis`` client (made on first use, its script registered)."""
        if self._script is None:
            with self._lock:
                if self._client is None:
                    self._client = self.redis.Redis.from_url(
                        self._url,
                        socket_timeout=self.timeout,
                        socket_connect_timeout=self.timeout,
                        **self._options,
                    )
                if self._script is None:
                    self._script = self._client.register_script(self._source)
        return self._client

    def script(self, *, keys: list[str], args: tuple[Any, ...]) -> Any:
        """Run the script: one round trip (``EVALSHA``; a server that lost it gets it loaded again)."""
        self.client()
        return self._script(keys=keys, args=args)

    def available(self) -> bool:
        """Whether to ask Redis now (not within ``retry_interval`` of its last error)."""
        return self._down_until == 0.0 or time.monotonic() >= self._down_until

    def failed(self, error: Exception) -> None:
        """Redis did not answer: stop asking for a while, and warn if an outage just began."""
        first = self._down_until == 0.0
        self._down_until = time.monotonic() + self.retry_interval
        if first:
            self.logger.warning(
                "%s unavailable (%s); %s until it answers again", self.what, type(error).__name__, self.down
            )

    def recovered(self) -> None:
        """Redis answered: end an outage (with a warning saying so)."""
        if self._down_until != 0.0:
            self._down_until = 0.0
            self.logger.warning("%s available again; %s", self.what, self.up)

    def close(self) -> None:
        """Close the connections this link opened (a client passed in is left open)."""
        with self._lock:
            if self._client is not None and self._script is not None:
                self._client.close()
