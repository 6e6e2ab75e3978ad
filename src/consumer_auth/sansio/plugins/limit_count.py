"""The ``limit-count`` plugin: at most ``count`` requests per ``time_window`` seconds, per key (SPEC §10).

This module is long because the plugin's schema, its full access phase and its quick form sit together.

As APISIX's plugin of the same name (priority 1002, after authentication): a fixed window starts with a
key's first request; every request in it counts, rejected ones included; past ``count`` the answer is
``rejected_code``. Allowed answers carry ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and
``X-RateLimit-Reset`` (seconds left in the window, rounded up); a rejection carries them too, with
``Remaining: 0``.

Whose count a request adds to: the place the plugin sits (a route or service: that route; a consumer: that
consumer, on every route; a consumer group: that group, on every route), then the ``key``: ``remote_addr``
(default on routes and services), ``consumer_name`` (default on consumers and groups), ``route_id`` or
``service_id``. A key with no value for a request (no consumer, no service) counts by ``remote_addr``,
as APISIX does. See ``docs/plugins.md``.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, ClassVar

from consumer_auth.sansio._validate import (
    check_url,
    expect_bool,
    expect_choice,
    expect_int,
    expect_mapping,
    expect_str,
    fail,
    reject_unknown,
)
from consumer_auth.sansio.counters import Counter, RedisTarget
from consumer_auth.sansio.decision import Reject, encode_headers, json_reject
from consumer_auth.sansio.plugin import Environment, Plugin, QuickAccess, QuickHeaders, Suspend

if TYPE_CHECKING:
    from consumer_auth.sansio.consumers import Consumer
    from consumer_auth.sansio.decision import MatchedRoute, RequestFacts
    from consumer_auth.sansio.plugin import PluginRequest

__all__ = ["KEYS", "LimitCountCheck", "LimitCountPlugin"]

KEYS = ("consumer_name", "remote_addr", "route_id", "service_id")
"""What ``key`` may name with ``key_type: var``."""

LIMIT_HEADER = "X-RateLimit-Limit"
REMAINING_HEADER = "X-RateLimit-Remaining"
RESET_HEADER = "X-RateLimit-Reset"
_RAW_REMAINING = REMAINING_HEADER.lower().encode()

_FIELDS = (
    "count",
    "time_window",
    "key_type",
    "key",
    "rejected_code",
    "rejected_msg",
    "policy",
    "show_limit_quota_header",
    "redis_host",
    "redis_port",
    "redis_username",
    "redis_password",
    "redis_database",
    "redis_timeout",
    "redis_url",
    "redis_prefix",
)
_SCHEMES = ("redis", "rediss", "unix")
_REDIS_FIELDS = frozenset(f for f in _FIELDS if f.startswith("redis_"))


@dataclass(frozen=True, slots=True)
class LimitCountPlugin(Plugin):
    """Limit requests to ``count`` per ``time_window`` seconds, per key (APISIX's ``limit-count``).

    Args:
        count: Requests allowed per window (an integer > 0).
        time_window: The window, in whole seconds (> 0). It starts with a key's first request.
        key_type: ``var`` (the default: ``key`` names a value of the request) or ``constant`` (``key``
            is the counter's name: every request of the plugin counts together).
        key: With ``var``: ``remote_addr``, ``consumer_name``, ``route_id`` or ``service_id``. Default:
            ``consumer_name`` when the plugin sits on a consumer or a consumer group, else ``remote_addr``.
        rejected_code: Status of a rejection (default 503).
        rejected_msg: Message of a rejection: the body is ``{"error_msg":"<rejected_msg>"}`` and a newline.
            Default: the status and its phrase (``{"error_msg":"503 Service Unavailable"}``).
        policy: ``local`` (the default: counted in this process, bounded memory) or ``redis`` (counted in
            Redis, shared by every process and machine using it; needs the ``redis`` extra).
        show_limit_quota_header: Send the ``X-RateLimit-*`` headers (default true).
        redis_host: Redis host (``policy: redis``; or give ``redis_url``).
        redis_port: Redis port (default 6379).
        redis_username: Redis ACL user, if any.
        redis_password: Redis password, if any (never logged, never shown).
        redis_database: Redis database number (default 0).
        redis_timeout: Milliseconds to wait for Redis before letting the request through (default 1000).
        redis_url: ``redis://[user:password@]host:port/db`` (``rediss://`` for TLS), instead of the
            ``redis_host`` fields.
        redis_prefix: Put before every Redis key (default ``consumer_auth:``), so that several gateways
            can share one Redis apart.

    Security note: when Redis cannot be reached, requests are let through uncounted (and a warning is
    logged on ``consumer_auth.limit_count``, once per outage).

    Example:
        >>> LimitCountPlugin(count=2, time_window=60).rejected_code
        503
    """

    name: ClassVar[str] = "limit-count"
    priority: ClassVar[int] = 1002

    count: int
    time_window: int
    key_type: str = "var"
    key: str | None = None
    rejected_code: int = 503
    rejected_msg: str | None = None
    policy: str = "local"
    show_limit_quota_header: bool = True
    redis_host: str | None = None
    redis_port: int = 6379
    redis_username: str | None = None
    redis_password: str | None = field(default=None, repr=False)
    redis_database: int = 0
    redis_timeout: int = 1000
    redis_url: str | None = field(default=None, repr=False)
    redis_prefix: str = "consumer_auth:"

    def __post_init__(self) -> None:
        expect_int(self.count, "count", minimum=1)
        expect_int(self.time_window, "time_window", minimum=1)
        expect_choice(self.key_type, "key_type", ("var", "constant"))
        if self.key is not None:
            if self.key_type == "var":
                expect_choice(self.key, "key", KEYS)
            else:
                expect_str(self.key, "key")
        elif self.key_type == "constant":
            fail("key", "required with key_type 'constant'")
        expect_int(self.rejected_code, "rejected_code", minimum=200, maximum=599)
        if self.rejected_msg is not None:
            expect_str(self.rejected_msg, "rejected_msg")
        expect_choice(self.policy, "policy", ("local", "redis"))
        expect_bool(self.show_limit_quota_header, "show_limit_quota_header")
        if self.policy == "redis":
            self._check_redis()

    def _check_redis(self) -> None:
        if importlib.util.find_spec("redis") is None:
            fail("policy", "'redis' needs the redis package (pip install 'consumer-auth[redis]')")
        if self.redis_url is not None:
            check_url(expect_str(self.redis_url, "redis_url", secret=True), "redis_url", _SCHEMES)
            if self.redis_host is not None:
                fail("redis_host", "give either redis_url or redis_host, not both")
        elif self.redis_host is None:
            fail("redis_host", "required with policy 'redis' (or give redis_url)")
        else:
            expect_str(self.redis_host, "redis_host")
        expect_int(self.redis_port, "redis_port", minimum=1, maximum=65535)
        expect_int(self.redis_database, "redis_database", minimum=0)
        expect_int(self.redis_timeout, "redis_timeout", minimum=1)
        if self.redis_username is not None:
            expect_str(self.redis_username, "redis_username")
        if self.redis_password is not None:
            expect_str(self.redis_password, "redis_password", secret=True, nonempty=False)
        expect_str(self.redis_prefix, "redis_prefix", nonempty=False)

    @classmethod
    def from_config(cls, value: object) -> LimitCountPlugin:
        """Build from a configuration mapping (errors are relative to the plugin)."""
        config = expect_mapping(value, "", secret=True)
        reject_unknown(config, _FIELDS, "")
        for name in ("count", "time_window"):
            if name not in config:
                fail(name, "required")
        if config.get("policy", "local") != "redis":
            for name in sorted(_REDIS_FIELDS & config.keys()):
                fail(name, "only with policy 'redis'")
        return cls(**config)

    def redis_target(self) -> RedisTarget:
        """Where a ``policy: redis`` plugin counts (its ``redis_*`` fields as one value)."""
        url = self.redis_url
        if url is None:
            url = f"redis://{_host(str(self.redis_host))}:{self.redis_port}/{self.redis_database}"
        return RedisTarget(
            url,
            self.redis_password,
            self.redis_username,
            self.redis_timeout / 1000,
            self.redis_prefix,
        )

    def compile(self, environment: Environment) -> LimitCountCheck:
        """The check a route runs (its rejection precomputed, its counter chosen)."""
        return LimitCountCheck(self, environment)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _message(plugin: LimitCountPlugin) -> str:
    if plugin.rejected_msg is not None:
        return plugin.rejected_msg
    try:
        return f"{plugin.rejected_code} {HTTPStatus(plugin.rejected_code).phrase}"
    except ValueError:
        return str(plugin.rejected_code)


_REJECTIONS_LIMIT = 1024


class LimitCountCheck(Plugin):
    """A compiled ``limit-count`` plugin (its ``access`` phase).

    A request's counter key is ``lc:<count>/<time_window>:<place>|<key value>``: a changed limit starts a
    new count, and the place is found at the first request (see :meth:`_find_scope`).
    """

    __slots__ = (
        "_address_prefix",
        "_config",
        "_counters",
        "_environment",
        "_key",
        "_limit",
        "_limit_header",
        "_message",
        "_no_redis",
        "_quick_key",
        "_raw_limit",
        "_redis",
        "_rejected",
        "_rejections",
        "_resets",
        "_scope",
        "_show",
        "_window",
    )

    name: ClassVar[str] = LimitCountPlugin.name
    priority: ClassVar[int] = LimitCountPlugin.priority

    def __init__(self, plugin: LimitCountPlugin, environment: Environment) -> None:
        counters = environment.counters
        redis = plugin.policy == "redis"
        self._config = plugin
        self._counters = counters
        self._environment = environment
        # A gateway compiled only to check a configuration cannot reach Redis: it never counts.
        self._redis: Counter | None = (
            counters.redis(plugin.redis_target()) if redis and counters.reach_redis else None
        )
        self._no_redis = redis and self._redis is None
        self._limit = plugin.count
        self._limit_header = (LIMIT_HEADER, str(plugin.count))
        self._raw_limit = encode_headers((self._limit_header,))[0]
        self._window = float(plugin.time_window)
        self._show = plugin.show_limit_quota_header
        self._message = _message(plugin)
        self._rejected = json_reject(plugin.rejected_code, "error_msg", self._message, reason="rate_limited")
        self._rejections: dict[int, Reject] = {}
        self._resets: dict[int, tuple[tuple[str, str], tuple[bytes, bytes]]] = {}
        self._address_prefix: str | None = None  # the scope and "a:", once found, when keyed by address
        self._scope: str | None = None  # found at the first request: where the plugin sits
        self._key: Callable[[PluginRequest], str] = _by_address
        self._quick_key: Callable[[LimitCountCheck, RequestFacts, Consumer, MatchedRoute], str] = (
            _quick_address
        )

    def access(self, request: PluginRequest) -> Reject | Suspend | None:
        """Count the request; reject it past ``count``, else add the ``X-RateLimit-*`` headers."""
        scope = self._scope
        if scope is None:
            scope = self._find_scope(request)
        key = scope + self._key(request)
        redis = self._redis
        if redis is not None:
            # The counter key as the lane: requests of one key wait on each other, not on all the others.
            return Suspend(True, lambda: self._count(redis, key, request), key)
        if self._no_redis:
            self._counters.redis(self._config.redis_target())  # raises: a bare sans-IO gateway has no Redis
        return self._count(self._counters.memory, key, request)

    def quick_access(self) -> QuickAccess | None:
        """The ``access`` phase without a request object, counting in memory (``policy: local``)."""
        return None if self._redis is not None or self._no_redis else self._quick

    def _quick(
        self, facts: RequestFacts, consumer: Consumer, route: MatchedRoute
    ) -> Reject | QuickHeaders | None:
        prefix = self._address_prefix
        if prefix is not None:  # the usual key: the client address
            # Without X-Forwarded-For the client is the peer, whichever proxies are trusted.
            client = facts.client if not facts.forwarded_for else self._environment.client_address(facts)
            key = prefix + (client or "")
        else:
            if self._scope is None:
                # The consumer brings no plugins (the quick form's condition): the plugin is the route's.
                self._settle(f"route:{route.label}", "remote_addr")
                return self._quick(facts, consumer, route)
            key = self._quick_key(self, facts, consumer, route)
        found = self._counters.memory.incoming(key, self._window)
        if found is None:
            return None  # the counter is unavailable: let the request through, uncounted
        used, left = found
        limit = self._limit
        if used > limit:
            return self._rejection(_ceil(left) if left > 0 else 0)
        if self._show:
            seconds = _ceil(left) if left > 0 else 0
            reset, raw_reset = self._resets.get(seconds) or self._reset(seconds)
            remaining = f"{limit - used}"  # an f-string: cheaper than str() per request
            return (
                (self._limit_header, (REMAINING_HEADER, remaining), reset),
                (self._raw_limit, (_RAW_REMAINING, remaining.encode()), raw_reset),
            )
        return None

    def _reset(self, seconds: int) -> tuple[tuple[str, str], tuple[bytes, bytes]]:
        """The ``X-RateLimit-Reset`` header of ``seconds`` (text and bytes), kept: the same few come
        over and over."""
        if len(self._resets) >= _REJECTIONS_LIMIT:
            self._resets.clear()
        header = (RESET_HEADER, str(seconds))
        found = self._resets[seconds] = (header, encode_headers((header,))[0])
        return found

    def _count(self, counter: Counter, key: str, request: PluginRequest) -> Reject | None:
        found = counter.incoming(key, self._window)
        if found is None:
            return None  # the counter is unavailable: let the request through, uncounted
        used, left = found
        reset = _ceil(left) if left > 0 else 0
        if used > self._limit:
            return self._rejection(reset)
        if self._show:
            request.response_headers += (
                self._limit_header,
                (REMAINING_HEADER, str(self._limit - used)),
                (RESET_HEADER, str(reset)),
            )
        return None

    def _rejection(self, reset: int) -> Reject:
        if not self._show:
            return self._rejected
        found = self._rejections.get(reset)
        if found is None:
            found = json_reject(
                self._config.rejected_code,
                "error_msg",
                self._message,
                self._limit_header,
                (REMAINING_HEADER, "0"),
                (RESET_HEADER, str(reset)),
                reason="rate_limited",
            )
            if len(self._rejections) >= _REJECTIONS_LIMIT:
                self._rejections.clear()
            self._rejections[reset] = found
        return found

    def _find_scope(self, request: PluginRequest) -> str:
        """Where the plugin sits, as the start of its counter keys.

        The same for every request that reaches this compiled plugin: it belongs to one route's pipeline,
        or (a plugin of a consumer or of its group) to the pipeline of one consumer on one route.
        """
        plugin = self._config
        consumer = request.consumer
        if consumer is not None and any(p is plugin for p in consumer.plugins):
            return self._settle(f"consumer:{consumer.username}", "consumer_name")
        if consumer is not None and any(p is plugin for p in request.consumers.group_plugins(consumer)):
            return self._settle(f"group:{consumer.group_id}", "consumer_name")
        return self._settle(f"route:{request.route_id}", "remote_addr")

    def _settle(self, place: str, default: str) -> str:
        """Set the counter keys' start (``place``) and what follows it (``default`` unless ``key`` says)."""
        plugin = self._config
        scope = f"lc:{plugin.count}/{plugin.time_window}:{place}|"
        if plugin.key_type == "constant":
            constant = "k:" + str(plugin.key)
            whole = scope + constant
            self._key = lambda request: constant
            self._quick_key = lambda check, facts, consumer, route: whole
        else:
            name = plugin.key or default
            self._key = _KEYS[name]
            self._quick_key = _QUICK_KEYS[name]
            if name == "remote_addr":
                self._address_prefix = scope + "a:"
        self._scope = scope
        return scope


_ceil = math.ceil


def _by_address(request: PluginRequest) -> str:
    return "a:" + (request.client or "")


def _by_consumer(request: PluginRequest) -> str:
    consumer = request.consumer
    return "c:" + consumer.username if consumer is not None else _by_address(request)


def _by_route(request: PluginRequest) -> str:
    return "r:" + request.route_id


def _by_service(request: PluginRequest) -> str:
    service = request.service_id
    return "s:" + service if service is not None else _by_address(request)


_KEYS: dict[str, Callable[[PluginRequest], str]] = {
    "remote_addr": _by_address,
    "consumer_name": _by_consumer,
    "route_id": _by_route,
    "service_id": _by_service,
}

# The same keys, whole (the scope included), for the quick form: no request object, the consumer known.


def _quick_address(
    check: LimitCountCheck, facts: RequestFacts, consumer: Consumer, route: MatchedRoute
) -> str:
    return f"{check._scope}a:{check._environment.client_address(facts) or ''}"


def _quick_consumer(
    check: LimitCountCheck, facts: RequestFacts, consumer: Consumer, route: MatchedRoute
) -> str:
    return f"{check._scope}c:{consumer.username}"


def _quick_route(check: LimitCountCheck, facts: RequestFacts, consumer: Consumer, route: MatchedRoute) -> str:
    return f"{check._scope}r:{route.label}"


def _quick_service(
    check: LimitCountCheck, facts: RequestFacts, consumer: Consumer, route: MatchedRoute
) -> str:
    service = route.service_id
    if service is None:
        return _quick_address(check, facts, consumer, route)
    return f"{check._scope}s:{service}"


_QUICK_KEYS: dict[str, Callable[[LimitCountCheck, RequestFacts, Consumer, MatchedRoute], str]] = {
    "remote_addr": _quick_address,
    "consumer_name": _quick_consumer,
    "route_id": _quick_route,
    "service_id": _quick_service,
}
