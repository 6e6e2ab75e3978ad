"""Brute-force protection: limits, the 429, both stores, trusted proxies, and every mode."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

import configs
from consumer_auth import (
    BruteForce,
    ConfigError,
    Consumer,
    Gateway,
    MemoryFailureStore,
    RedisFailureStore,
    Reject,
    RequestFacts,
)
from consumer_auth.sansio.passwords import Argon2Password, hash_password
from consumer_auth.sansio.plugins.brute_force import client_subject
from proxy_servers import CONSUMER_AUTH, Process, echo, request, start_upstream
from support import REDIS_URL, Mode, basic

LOCKED_BODY = b'{"message":"Too many failed attempts"}\n'


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def config(limits: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    """alex/123456 and bob/hunter2 on /login, with brute-force limits (3 failures, 60 s, 300 s)."""
    plugin: dict[str, Any] = {
        "brute_force": {"max_failures": 3, "window": 60, "lockout": 300, **(limits or {})}
    }
    return {
        "consumers": [
            {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}},
            {"username": "bob", "plugins": {"basic-auth": {"username": "bob", "password": "hunter2"}}},
        ],
        "routes": [
            {"id": "login", "uri": "/login", "plugins": {"basic-auth": plugin}},
            {"id": "free", "uri": "/free", "plugins": {"basic-auth": {}}},
        ],
        **top,
    }


def attempt(
    gateway: Gateway, user: str, password: str, client: str | None = "192.0.2.1", **facts: Any
) -> Any:
    return gateway.decide_now(
        RequestFacts("GET", facts.pop("path", "/login"), None, (basic(user, password),), client, **facts)
    )


def status(decision: Any) -> int:
    return decision.status if isinstance(decision, Reject) else 200


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gateway(clock: FakeClock) -> Gateway:
    built = Gateway.from_dict(config())
    built.brute_force_store = MemoryFailureStore(clock=clock)
    return built


# --- configuration errors name their place --------------------------------------------------------


def _route_plugin(brute_force: object) -> dict[str, Any]:
    document = config()
    document["routes"][0]["plugins"]["basic-auth"]["brute_force"] = brute_force
    return document


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param(
            _route_plugin({"max_failures": 0}),
            "routes[0].plugins.basic-auth.brute_force.max_failures: expected an integer >= 1, got 0",
            id="max-zero",
        ),
        pytest.param(
            _route_plugin({"window": 5}),
            "routes[0].plugins.basic-auth.brute_force.max_failures: required",
            id="max-missing",
        ),
        pytest.param(
            _route_plugin({"max_failures": "5"}),
            "routes[0].plugins.basic-auth.brute_force.max_failures: expected an integer, got '5'",
            id="max-string",
        ),
        pytest.param(
            _route_plugin({"max_failures": 5, "window": -1}),
            "routes[0].plugins.basic-auth.brute_force.window: expected a positive number, got -1",
            id="window-negative",
        ),
        pytest.param(
            _route_plugin({"max_failures": 5, "lockout": 0.0001}),
            "routes[0].plugins.basic-auth.brute_force.lockout: expected at least 0.001 seconds, got 0.0001",
            id="lockout-tiny",
        ),
        pytest.param(
            _route_plugin({"max_failures": 5, "lockout": True}),
            "routes[0].plugins.basic-auth.brute_force.lockout: expected a number, got True",
            id="lockout-bool",
        ),
        pytest.param(
            _route_plugin({"max_failures": 5, "count_by": ["ip"]}),
            "routes[0].plugins.basic-auth.brute_force.count_by[0]: expected one of 'username', 'client', got 'ip'",
            id="count-by-unknown",
        ),
        pytest.param(
            _route_plugin({"max_failures": 5, "count_by": []}),
            "routes[0].plugins.basic-auth.brute_force.count_by: expected a non-empty list",
            id="count-by-empty",
        ),
        pytest.param(
            _route_plugin({"max_failures": 5, "count_by": ["client", "client"]}),
            "routes[0].plugins.basic-auth.brute_force.count_by: expected each of username, client at most once",
            id="count-by-twice",
        ),
        pytest.param(
            _route_plugin({"max_failures": 5, "lockuot": 9}),
            "routes[0].plugins.basic-auth.brute_force.lockuot: unknown key (expected one of: count_by, lockout, max_failures, window)",
            id="unknown-key",
        ),
        pytest.param(
            _route_plugin([5, 60]),
            "routes[0].plugins.basic-auth.brute_force: expected a mapping, got [5, 60]",
            id="not-a-mapping",
        ),
        pytest.param(
            config(trusted_proxies=["10.0.0.1/8"]),
            "trusted_proxies[0]: expected an IP address or network, got '10.0.0.1/8' (host bits set)",
            id="proxies-host-bits",
        ),
        pytest.param(
            config(trusted_proxies=["127.0.0.1", "localhost"]),
            "trusted_proxies[1]: expected an IP address or network, got 'localhost' (not an IP address or CIDR network)",
            id="proxies-name",
        ),
        pytest.param(
            config(trusted_proxies="10.0.0.0/8"),
            "trusted_proxies: expected a list of strings, got '10.0.0.0/8'",
            id="proxies-not-a-list",
        ),
        pytest.param(
            config(brute_force_store={"type": "memcached"}),
            "brute_force_store.type: expected one of 'memory', 'redis', got 'memcached'",
            id="store-type",
        ),
        pytest.param(
            config(brute_force_store={"type": "redis", "urll": "x"}),
            "brute_force_store.urll: unknown key (expected one of: key_prefix, retry_interval, timeout, type, url)",
            id="store-redis-key",
        ),
        pytest.param(
            config(brute_force_store={"type": "redis", "timeout": 0}),
            "brute_force_store.timeout: expected a positive number, got 0",
            id="store-redis-timeout",
        ),
        pytest.param(
            config(brute_force_store={"type": "redis", "url": "MARKERredis://:hunter2@"}),
            "brute_force_store.url: expected a URL starting with redis://, rediss://, unix://, "
            "got scheme 'markerredis'",
            id="store-redis-url-scheme",
        ),
        pytest.param(
            config(brute_force_store={"type": "redis", "url": "redis://:hunter2@"}),
            "brute_force_store.url: expected a URL starting with redis://, rediss://, unix:// and a host, "
            "got no host",
            id="store-redis-url-host",
        ),
        pytest.param(
            config(brute_force_store={"type": "redis", "url": "redis://:hunter2@[::1"}),
            "brute_force_store.url: expected a URL starting with redis://, rediss://, unix:// "
            "(this one cannot be parsed)",
            id="store-redis-url-unparsable",
        ),
        pytest.param(
            config(brute_force_store={"type": "redis", "url": "redis:hunter2@db"}),
            "brute_force_store.url: expected a URL starting with redis://, rediss://, unix://, "
            "got no '//' after the scheme",
            id="store-redis-url-slashes",
        ),
        pytest.param(
            config(brute_force_store={"max_locks": 0}),
            "brute_force_store.max_locks: expected an integer >= 1, got 0",
            id="store-memory-locks",
        ),
        pytest.param(
            config(brute_force_store={"max_entries": 0}),
            "brute_force_store.max_entries: expected an integer >= 1, got 0",
            id="store-memory-size",
        ),
    ],
)
def test_config_errors_name_the_place(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Gateway.from_dict(document)
    assert str(caught.value) == message
    assert "hunter2" not in str(caught.value)


def test_config_builds_the_stores() -> None:
    prefix = f"test-{uuid.uuid4().hex}:"
    built = Gateway.from_dict(
        config(brute_force_store={"type": "redis", "url": REDIS_URL, "key_prefix": prefix})
    )
    assert isinstance(built.brute_force_store, RedisFailureStore)
    assert built.brute_force_store.key_prefix == prefix
    assert isinstance(Gateway.from_dict(config()).brute_force_store, MemoryFailureStore)
    store = Gateway.from_dict(
        config(brute_force_store={"type": "memory", "max_entries": 7})
    ).brute_force_store
    assert isinstance(store, MemoryFailureStore)
    assert store.max_entries == 7


def test_python_api_accepts_objects_and_mappings() -> None:
    limits = BruteForce(max_failures=2, window=1.5, lockout=2)
    assert limits.window == 1.5
    assert limits.lockout == 2.0
    from consumer_auth import BasicAuthPlugin

    assert BasicAuthPlugin(brute_force={"max_failures": 2}).brute_force == BruteForce(2)
    with pytest.raises(ConfigError, match=r"^brute_force\.max_failures: expected an integer >= 1, got -1$"):
        BasicAuthPlugin(brute_force={"max_failures": -1})


# --- counting and locking (in-memory store, fake clock) -------------------------------------------


def test_locks_after_max_failures_and_answers_429_before_the_password(
    gateway: Gateway, clock: FakeClock
) -> None:
    for _ in range(3):
        decision = attempt(gateway, "alex", "wrong")
        assert decision.body == b'{"message":"Password is error"}\n'
    locked = attempt(gateway, "alex", "123456")  # the right password, too late
    assert isinstance(locked, Reject)
    assert locked.status == 429
    assert locked.body == LOCKED_BODY
    assert dict(locked.headers) == {"Content-Type": "text/plain; charset=utf-8", "Retry-After": "300"}
    assert ("Content-Length", str(len(LOCKED_BODY))) in locked.wsgi_headers
    clock.now += 299.5
    assert dict(attempt(gateway, "alex", "123456").headers)["Retry-After"] == "1"
    clock.now += 0.5
    assert status(attempt(gateway, "alex", "123456")) == 200


def test_failures_below_the_limit_keep_the_spec_answers(gateway: Gateway, clock: FakeClock) -> None:
    assert attempt(gateway, "alex", "wrong").body == b'{"message":"Password is error"}\n'
    assert (
        attempt(gateway, "nobody", "x", client="192.0.2.9").body
        == b'{"message":"Invalid user key in authorization"}\n'
    )
    assert status(attempt(gateway, "alex", "123456")) == 200


def test_the_window_starts_at_the_first_failure(gateway: Gateway, clock: FakeClock) -> None:
    attempt(gateway, "alex", "wrong")
    attempt(gateway, "alex", "wrong")
    clock.now += 60  # the window of those two has passed
    attempt(gateway, "alex", "wrong")
    attempt(gateway, "alex", "wrong")
    assert status(attempt(gateway, "alex", "123456")) == 200
    assert status(attempt(gateway, "alex", "wrong")) == 401  # third in this window: now locked
    assert status(attempt(gateway, "alex", "123456")) == 429


def test_a_locked_username_is_locked_from_every_client(gateway: Gateway) -> None:
    for index in range(3):
        attempt(gateway, "alex", "wrong", client=f"198.51.100.{index}")
    assert status(attempt(gateway, "alex", "123456", client="203.0.113.7")) == 429
    assert status(attempt(gateway, "bob", "hunter2", client="203.0.113.7")) == 200


def test_a_locked_client_is_locked_for_every_username(gateway: Gateway) -> None:
    for name in ("u1", "u2", "u3"):
        attempt(gateway, name, "guess")
    assert status(attempt(gateway, "bob", "hunter2")) == 429
    assert status(attempt(gateway, "bob", "hunter2", client="192.0.2.2")) == 200


def test_unknown_usernames_lock_exactly_like_known_ones() -> None:
    document = config()
    document["profile"] = "apisix-3"
    built = Gateway.from_dict(document)
    known = [attempt(built, "alex", "wrong", client=f"198.51.100.{i}") for i in range(4)]
    unknown = [attempt(built, "nobody", "wrong", client=f"203.0.113.{i}") for i in range(4)]
    assert [(d.status, d.body, d.headers) for d in known] == [(d.status, d.body, d.headers) for d in unknown]
    assert known[-1].status == 429


@pytest.mark.parametrize(
    ("count_by", "same_user_other_client", "other_user_same_client"),
    [
        pytest.param(["username"], 429, 200, id="username"),
        pytest.param(["client"], 200, 429, id="client"),
    ],
)
def test_count_by_one_subject(
    count_by: list[str], same_user_other_client: int, other_user_same_client: int
) -> None:
    built = Gateway.from_dict(config({"count_by": count_by}))
    for _ in range(3):
        attempt(built, "alex", "wrong")
    assert status(attempt(built, "alex", "123456", client="203.0.113.7")) == same_user_other_client
    assert status(attempt(built, "bob", "hunter2")) == other_user_same_client


def test_without_a_client_address_nothing_is_counted_by_client() -> None:
    built = Gateway.from_dict(config({"count_by": ["client"]}))
    for _ in range(5):
        assert status(attempt(built, "alex", "wrong", client=None)) == 401


def test_routes_without_limits_neither_count_nor_check(gateway: Gateway) -> None:
    for _ in range(5):
        assert status(attempt(gateway, "alex", "wrong", path="/free")) == 401
    assert status(attempt(gateway, "alex", "123456")) == 200
    for _ in range(3):
        attempt(gateway, "alex", "wrong")
    assert status(attempt(gateway, "alex", "123456", path="/free")) == 200


def test_header_failures_are_not_counted(gateway: Gateway) -> None:
    for authorization in ((), ("Bearer x",), ("Basic !!",)):
        for _ in range(5):
            facts = RequestFacts("GET", "/login", None, authorization, "192.0.2.1")
            assert status(gateway.decide_now(facts)) == 401
    assert status(attempt(gateway, "alex", "123456")) == 200


def test_a_success_does_not_reset_the_count(gateway: Gateway) -> None:
    attempt(gateway, "alex", "wrong")
    attempt(gateway, "alex", "wrong")
    assert status(attempt(gateway, "alex", "123456")) == 200
    attempt(gateway, "alex", "wrong")
    assert status(attempt(gateway, "alex", "123456")) == 429


def test_anonymous_consumer_failures_count_and_a_lock_is_a_429() -> None:
    document = config()
    document["consumers"].append({"username": "guest"})
    document["routes"][0]["plugins"]["basic-auth"]["anonymous_consumer"] = "guest"
    built = Gateway.from_dict(document)
    for _ in range(3):
        assert attempt(built, "alex", "wrong").consumer.username == "guest"
    assert status(attempt(built, "alex", "123456")) == 429
    no_credentials: Any = built.decide_now(RequestFacts("GET", "/login", None, (), "192.0.2.1"))
    assert no_credentials.consumer.username == "guest"


def test_no_hash_is_run_for_a_locked_subject(monkeypatch: pytest.MonkeyPatch) -> None:
    built = Gateway(
        consumers=[Consumer("alex", password_hash=hash_password("123456"))],
        routes=[_route("/login", {"max_failures": 2})],
    )
    calls = 0
    real = Argon2Password.verify

    def counting(self: Argon2Password, password: str) -> bool:
        nonlocal calls
        calls += 1
        return real(self, password)

    monkeypatch.setattr(Argon2Password, "verify", counting)
    attempt(built, "alex", "wrong")
    attempt(built, "nobody", "wrong", client="192.0.2.2")  # the decoy runs for unknown usernames too
    assert calls == 2
    attempt(built, "alex", "wrong")
    pending = built.decide(RequestFacts("GET", "/login", None, (basic("alex", "123456"),), "192.0.2.1"))
    decision = pending.run()  # type: ignore[union-attr]
    assert status(decision) == 429
    assert calls == 3


def _route(uri: str, limits: dict[str, Any]) -> Any:
    from consumer_auth import BasicAuthPlugin, Route

    return Route(uri, plugins=[BasicAuthPlugin(brute_force=limits)])


def test_routes_with_the_same_limits_share_counts_and_different_limits_do_not() -> None:
    built = Gateway(
        consumers=[Consumer("alex", password="123456")],
        routes=[
            _route("/a", {"max_failures": 2}),
            _route("/b", {"max_failures": 2}),
            _route("/c", {"max_failures": 3}),
        ],
    )
    attempt(built, "alex", "wrong", path="/a")
    attempt(built, "alex", "wrong", path="/b")
    assert status(attempt(built, "alex", "123456", path="/a")) == 429
    assert status(attempt(built, "alex", "123456", path="/c")) == 200


def test_memory_store_is_bounded(clock: FakeClock) -> None:
    store = MemoryFailureStore(max_entries=100, clock=clock)
    limits = BruteForce(max_failures=2, window=10, lockout=10)
    for index in range(1000):
        store.add_failure([f"k{index}"], limits)
    assert len(store) == 100
    assert store.add_failure(["k999"], limits) == ("k999",)  # the newest are kept
    clock.now += 11
    store.add_failure(["fresh"], limits)
    assert len(store) <= 100


def test_memory_store_never_forgets_a_lock_before_it_expires(clock: FakeClock) -> None:
    store = MemoryFailureStore(max_entries=10, clock=clock)
    limits = BruteForce(max_failures=3, window=60, lockout=300, count_by=("username",))
    for _ in range(3):
        store.add_failure(["victim"], limits)
    assert store.retry_after(["victim"]) == 300
    for index in range(1000):  # failures on made-up usernames churn the counters
        store.add_failure([f"made-up-{index}"], limits)
    clock.now += 299
    assert store.retry_after(["victim"]) == pytest.approx(1)
    clock.now += 2
    assert store.retry_after(["victim"]) == 0


def test_memory_store_at_its_lock_bound_keeps_the_locks_it_has(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryFailureStore(max_locks=2, clock=clock)
    limits = BruteForce(max_failures=1, window=60, lockout=100)
    assert store.add_failure(["a"], limits) == ("a",)
    assert store.add_failure(["b"], limits) == ("b",)
    with caplog.at_level(logging.WARNING, logger="consumer_auth.brute_force"):
        assert store.add_failure(["c"], limits) == ()
        assert store.add_failure(["d"], limits) == ()
    assert [r.getMessage() for r in caplog.records] == [
        "brute-force store: 2 subjects are locked out already (max_locks); "
        "no further subject is locked until a lock expires"
    ]
    assert store.retry_after(["a"]) == store.retry_after(["b"]) == 100
    assert store.retry_after(["c"]) == 0
    clock.now += 101
    assert store.add_failure(["c"], limits) == ("c",)  # room again once the old locks expired


def test_ipv6_clients_count_by_their_64_network(gateway: Gateway) -> None:
    for index in range(3):
        attempt(gateway, f"u{index}", "guess", client=f"2001:db8:1:2::{index + 1}")
    assert status(attempt(gateway, "bob", "hunter2", client="2001:db8:1:2:ffff::9")) == 429
    assert status(attempt(gateway, "bob", "hunter2", client="2001:db8:1:3::1")) == 200
    assert client_subject("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_subject("/run/gateway.sock").startswith("x")


# --- trusted proxies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded_for", "expected"),
    [
        pytest.param([], "192.0.2.1", ("203.0.113.9",), "192.0.2.1", id="no-trusted-proxies"),
        pytest.param(["10.0.0.0/8"], "192.0.2.1", ("203.0.113.9",), "192.0.2.1", id="untrusted-peer"),
        pytest.param(["10.0.0.0/8"], "10.0.0.5", ("203.0.113.9",), "203.0.113.9", id="trusted-peer"),
        pytest.param(
            ["10.0.0.0/8"],
            "10.0.0.5",
            ("1.1.1.1, 203.0.113.9, 10.0.0.7",),
            "203.0.113.9",
            id="rightmost-untrusted",
        ),
        pytest.param(
            ["10.0.0.0/8"], "10.0.0.5", ("1.1.1.1", "203.0.113.9"), "203.0.113.9", id="several-headers"
        ),
        pytest.param(
            ["10.0.0.0/8"], "10.0.0.5", ("10.0.0.8, 10.0.0.7",), "10.0.0.8", id="all-trusted-leftmost"
        ),
        pytest.param(
            ["10.0.0.0/8"],
            "10.0.0.5",
            ("203.0.113.9, garbage, 10.0.0.7",),
            "10.0.0.7",
            id="malformed-stops-at-last-trusted",
        ),
        pytest.param(["10.0.0.0/8"], "10.0.0.5", ("203.0.113.9:4711",), "203.0.113.9", id="v4-with-port"),
        pytest.param(["10.0.0.0/8"], "10.0.0.5", ("[2001:db8::1]:443",), "2001:db8::1", id="v6-with-port"),
        pytest.param(["10.0.0.0/8"], "10.0.0.5", ("2001:db8::1",), "2001:db8::1", id="v6"),
        pytest.param(["10.0.0.0/8"], "::ffff:10.0.0.5", ("203.0.113.9",), "203.0.113.9", id="v4-mapped-peer"),
        pytest.param(["127.0.0.1"], "127.0.0.1", (), "127.0.0.1", id="trusted-without-header"),
        pytest.param(["127.0.0.1"], None, ("203.0.113.9",), None, id="no-peer"),
        pytest.param(["127.0.0.1"], "unix-socket", ("203.0.113.9",), "unix-socket", id="peer-not-an-ip"),
    ],
)
def test_client_address(
    trusted: list[str], peer: str | None, forwarded_for: tuple[str, ...], expected: str | None
) -> None:
    built = Gateway(trusted_proxies=trusted)
    assert (
        built.client_address(RequestFacts("GET", "/", client=peer, forwarded_for=forwarded_for)) == expected
    )


def test_a_client_cannot_escape_a_lock_by_sending_x_forwarded_for(gateway: Gateway) -> None:
    for index in range(3):
        attempt(gateway, f"u{index}", "guess", forwarded_for=(f"203.0.113.{index}",))
    assert status(attempt(gateway, "bob", "hunter2", forwarded_for=("203.0.113.99",))) == 429


def test_behind_a_trusted_proxy_clients_are_counted_apart() -> None:
    built = Gateway.from_dict(config({"count_by": ["client"]}, trusted_proxies=["192.0.2.0/24"]))
    for index in range(3):
        attempt(built, f"u{index}", "guess", forwarded_for=("203.0.113.1",))
    assert status(attempt(built, "bob", "hunter2", forwarded_for=("203.0.113.1",))) == 429
    assert status(attempt(built, "bob", "hunter2", forwarded_for=("203.0.113.2",))) == 200
    assert status(attempt(built, "bob", "hunter2")) == 200  # the proxy itself is not locked


# --- every mode -----------------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_every_mode_locks_out_with_the_exact_429(
    mode: Mode, store: str, request: pytest.FixtureRequest
) -> None:
    top: dict[str, Any] = {}
    if store == "redis":
        top["brute_force_store"] = {
            "type": "redis",
            "url": REDIS_URL,
            "key_prefix": request.getfixturevalue("redis_prefix"),
        }
    name = f"brute-force-{uuid.uuid4().hex}"
    configs.CONFIGS[name] = config(**top)
    try:
        for _ in range(3):
            reply = mode.request(name, "GET", "/login", [("Authorization", basic("alex", "wrong"))])
            assert (reply.status, reply.body) == (401, b'{"message":"Password is error"}\n')
        reply = mode.request(name, "GET", "/login", [("Authorization", basic("alex", "123456"))])
        assert reply.status == 429
        assert reply.body == LOCKED_BODY
        assert reply.headers["content-type"] == "text/plain; charset=utf-8"
        assert reply.headers["content-length"] == str(len(LOCKED_BODY))
        assert 1 <= int(reply.headers["retry-after"]) <= 300
        assert "www-authenticate" not in reply.headers
        other = mode.request(name, "GET", "/login", [("Authorization", basic("bob", "hunter2"))])
        assert other.status == 429  # the same client address
        assert mode.request(name, "GET", "/login", []).status == 401  # no credentials: nothing to check
    finally:
        del configs.CONFIGS[name]


# --- Redis ----------------------------------------------------------------------------------------


def test_redis_store_counts_atomically_and_expires_its_keys(redis_prefix: str) -> None:
    import redis

    store = RedisFailureStore(REDIS_URL, key_prefix=redis_prefix)
    built = Gateway.from_dict(config({"lockout": 30}))
    built.brute_force_store = store
    try:
        for _ in range(3):
            attempt(built, "alex", "wrong")
        assert status(attempt(built, "alex", "123456")) == 429
        client = redis.Redis.from_url(REDIS_URL)
        keys = sorted(key.decode() for key in client.scan_iter(match=redis_prefix + "*"))
        assert len(keys) == 2, keys
        assert all(key.endswith(":lock") for key in keys), keys
        assert not any("alex" in key for key in keys)  # usernames are hashed
        assert all(0 < client.pttl(key) <= 30_000 for key in keys)
        attempt(built, "bob", "wrong", client="192.0.2.50")
        counter = f"{redis_prefix}{built.routes[0].plugins[0].brute_force.compile().tag}:c:192.0.2.50:n"  # type: ignore[attr-defined]
        assert client.get(counter) == b"1"
        assert 0 < client.pttl(counter) <= 60_000
        client.close()
    finally:
        store.close()


def test_redis_unreachable_fails_open_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    store = RedisFailureStore(
        "redis://:do-not-log-me@127.0.0.1:1/0", key_prefix="x:", timeout=0.2, retry_interval=3600
    )
    built = Gateway.from_dict(config({"max_failures": 1}))
    built.brute_force_store = store
    with caplog.at_level("WARNING", logger="consumer_auth.brute_force"):
        for _ in range(3):
            assert attempt(built, "alex", "wrong").body == b'{"message":"Password is error"}\n'
        assert status(attempt(built, "alex", "123456")) == 200
    warnings = [r for r in caplog.records if r.name == "consumer_auth.brute_force"]
    assert len(warnings) == 1
    assert "unavailable" in warnings[0].getMessage()
    assert "do-not-log-me" not in repr(warnings[0].__dict__)
    store.close()


def _get(port: int, authorization: str) -> tuple[int, bytes, dict[str, str]]:
    reply = request(port, "GET", "/login", [("Authorization", authorization)])
    return reply.status, reply.body, reply.headers


def test_two_serve_processes_share_one_failure_count_in_redis(redis_prefix: str, tmp_path: Path) -> None:
    upstream = start_upstream(echo, "brute-force")
    document = config(brute_force_store={"type": "redis", "url": REDIS_URL, "key_prefix": redis_prefix})
    for route in document["routes"]:
        route["upstream"] = upstream.url
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(document))
    processes = [Process([CONSUMER_AUTH, "serve", "--config", str(path), "--port", "0"]) for _ in range(2)]
    try:
        first, second = (process.uvicorn_port() for process in processes)
        # Three failures, split over both processes: neither alone has reached the limit.
        assert _get(first, basic("alex", "wrong"))[:2] == (401, b'{"message":"Password is error"}\n')
        assert _get(second, basic("alex", "wrong"))[:2] == (401, b'{"message":"Password is error"}\n')
        assert _get(first, basic("alex", "wrong"))[0] == 401
        for port in (second, first):
            answer, body, headers = _get(port, basic("alex", "123456"))
            assert (answer, body) == (429, LOCKED_BODY)
            assert 1 <= int(headers["retry-after"]) <= 300
        assert _get(first, basic("bob", "hunter2"))[0] == 429  # the same client address, locked too
    finally:
        for process in processes:
            assert process.terminate() == 0


# --- store details ----------------------------------------------------------------------------------


def test_the_package_does_not_import_redis() -> None:
    code = "import sys, consumer_auth; Gateway = consumer_auth.Gateway; print('redis' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_a_redis_store_without_the_redis_package_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis now raises ImportError
    with pytest.raises(ConfigError) as caught:
        Gateway.from_dict(config(brute_force_store={"type": "redis"}))
    assert str(caught.value) == (
        "brute_force_store.type: the 'redis' store needs the redis package (pip install 'consumer-auth[redis]')"
    )


def _hammer(store: Any, threads: int, each: int, limits: BruteForce) -> list[str]:
    """Add failures to one key from several threads at once; return every lock reported."""
    locked: list[str] = []
    start = threading.Barrier(threads)

    def work() -> None:
        start.wait()
        for _ in range(each):
            locked.extend(store.add_failure(["shared"], limits))

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return locked


def test_memory_store_counts_every_concurrent_failure_once() -> None:
    store = MemoryFailureStore()
    assert _hammer(store, 8, 250, BruteForce(max_failures=2000, window=3600, lockout=3600)) == ["shared"]
    assert store.retry_after(["shared"]) > 0


def test_redis_store_counts_every_concurrent_failure_once(redis_prefix: str) -> None:
    store = RedisFailureStore(REDIS_URL, key_prefix=redis_prefix)
    try:
        assert _hammer(store, 8, 25, BruteForce(max_failures=200, window=3600, lockout=3600)) == ["shared"]
        assert 3500 < store.retry_after(["shared"]) <= 3600
    finally:
        store.close()


def test_per_view_guards_are_limited_too() -> None:
    from consumer_auth import BasicAuthPlugin

    built = Gateway(consumers=[Consumer("alex", password="123456")])
    guard = built.guard(BasicAuthPlugin(brute_force={"max_failures": 2}))
    for _ in range(2):
        assert (
            status(guard.decide_now(RequestFacts("GET", "/", None, (basic("alex", "x"),), "192.0.2.1")))
            == 401
        )
    locked = guard.decide_now(RequestFacts("GET", "/", None, (basic("alex", "123456"),), "192.0.2.1"))
    assert (status(locked), locked.body) == (429, LOCKED_BODY)  # type: ignore[union-attr]


def test_a_cached_success_does_not_bypass_a_lock() -> None:
    built = Gateway(
        consumers=[Consumer("alex", password_hash=hash_password("123456"))],
        routes=[_route("/login", {"max_failures": 2, "count_by": ["username"]})],
    )
    assert status(attempt(built, "alex", "123456")) == 200  # now in the verification cache
    attempt(built, "alex", "wrong", client="203.0.113.1")
    attempt(built, "alex", "wrong", client="203.0.113.2")
    assert status(attempt(built, "alex", "123456")) == 429
