"""The ``limit-count`` plugin: its schema, the exact rejection, windows, keys, both policies, every mode."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import configs
from consumer_auth import (
    Allow,
    ConfigError,
    Gateway,
    LimitCountPlugin,
    MemoryCounter,
    RedisCounter,
    Reject,
    RequestFacts,
    Route,
)
from consumer_auth.sansio.decision import encode_headers
from proxy_servers import CONSUMER_AUTH, Process, echo, request, start_upstream
from support import REDIS_URL, Mode, basic, redis_or_skip, service_unavailable

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
BUSY_BODY = b'{"error_msg":"503 Service Unavailable"}\n'
ALEX = basic("alex", "123456")
JACK = basic("jack", "654321")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def config(
    limit: dict[str, Any] | None = None,
    *,
    on: str = "route",
    **top: Any,
) -> dict[str, Any]:
    """alex and jack; /json (basic-auth) and /free (basic-auth), a limit-count of 2 per 60 s ``on`` the
    route /json, the consumer alex, or the service both routes belong to (or nowhere)."""
    plugin = {"count": 2, "time_window": 60, **(limit or {})}
    alex: dict[str, Any] = {"basic-auth": {"username": "alex", "password": "123456"}}
    json_route: dict[str, Any] = {"basic-auth": {}}
    service: dict[str, Any] = {"id": "api", "path_prefix": "/api", "upstream": "http://127.0.0.1:9"}
    if on == "route":
        json_route["limit-count"] = plugin
    elif on == "consumer":
        alex["limit-count"] = plugin
    elif on == "service":
        service["plugins"] = {"limit-count": plugin}
    return {
        "consumers": [
            {"username": "alex", "plugins": alex},
            {"username": "jack", "plugins": {"basic-auth": {"username": "jack", "password": "654321"}}},
        ],
        "services": [service],
        "routes": [
            {"id": "json", "uri": "/json", "service_id": "api", "plugins": json_route},
            {"id": "free", "uri": "/free", "service_id": "api", "plugins": {"basic-auth": {}}},
        ],
        **top,
    }


def build(document: dict[str, Any]) -> Gateway:
    """A gateway whose in-memory counter runs on a clock that stands still (resets are exact)."""
    gateway = Gateway.from_dict(document)
    gateway.environment.counters.memory = MemoryCounter(clock=FakeClock())
    return gateway


def facts(path: str, authorization: str = ALEX, client: str = "192.0.2.10") -> RequestFacts:
    return RequestFacts("GET", path, authorization=(authorization,), client=client)


def decide(gateway: Gateway, path: str = "/api/json", **options: Any) -> Allow | Reject:
    return gateway.decide_now(facts(path, **options))


def quota(decision: Allow | Reject) -> tuple[int, tuple[tuple[str, str], ...]]:
    """The status and the ``X-RateLimit-*`` headers of a decision."""
    if isinstance(decision, Allow):
        assert decision.raw_response_headers == encode_headers(decision.response_headers)  # ASGI's form
        return 200, decision.response_headers
    return decision.status, tuple(h for h in decision.headers if h[0].startswith("X-RateLimit"))


def headers(limit: int, remaining: int, reset: int) -> tuple[tuple[str, str], ...]:
    return (
        ("X-RateLimit-Limit", str(limit)),
        ("X-RateLimit-Remaining", str(remaining)),
        ("X-RateLimit-Reset", str(reset)),
    )


# --- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        pytest.param({"count": 0}, "count: expected an integer >= 1, got 0", id="count-zero"),
        pytest.param({"count": "2"}, "count: expected an integer, got '2'", id="count-text"),
        pytest.param({"time_window": 1.5}, "time_window: expected an integer, got 1.5", id="window-float"),
        pytest.param({"time_window": True}, "time_window: expected an integer, got True", id="window-bool"),
        pytest.param(
            {"key": "http_x_user"},
            "key: expected one of 'consumer_name', 'remote_addr', 'route_id', 'service_id', got 'http_x_user'",
            id="key-unknown",
        ),
        pytest.param(
            {"key_type": "var_combination"},
            "key_type: expected one of 'var', 'constant', got 'var_combination'",
            id="key-type",
        ),
        pytest.param(
            {"key_type": "constant"}, "key: required with key_type 'constant'", id="constant-no-key"
        ),
        pytest.param(
            {"rejected_code": 600}, "rejected_code: expected an integer <= 599, got 600", id="code-high"
        ),
        pytest.param({"rejected_msg": ""}, "rejected_msg: expected a non-empty string", id="msg-empty"),
        pytest.param(
            {"policy": "redis-cluster"},
            "policy: expected one of 'local', 'redis', got 'redis-cluster'",
            id="policy",
        ),
        pytest.param(
            {"show_limit_quota_header": "yes"},
            "show_limit_quota_header: expected a boolean, got 'yes'",
            id="show-header",
        ),
        pytest.param(
            {"policy": "redis"}, "redis_host: required with policy 'redis' (or give redis_url)", id="no-host"
        ),
        pytest.param(
            {"policy": "redis", "redis_host": "h", "redis_port": 70000},
            "redis_port: expected an integer <= 65535, got 70000",
            id="redis-port",
        ),
        pytest.param(
            {"policy": "redis", "redis_url": "http://:hunter2@h"},
            "redis_url: expected a URL starting with redis://, rediss://, unix://, got scheme 'http'",
            id="redis-url-scheme",
        ),
        pytest.param(
            {"policy": "redis", "redis_url": REDIS_URL, "redis_host": "h"},
            "redis_host: give either redis_url or redis_host, not both",
            id="url-and-host",
        ),
        pytest.param(
            {"redis_host": "h"}, "redis_host: only with policy 'redis'", id="redis-field-with-local"
        ),
        pytest.param({"window": 60}, "window: unknown key (expected one of: count, key, ", id="unknown"),
    ],
)
def test_config_errors_name_the_exact_field(limit: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Gateway.from_dict(config(limit))
    assert str(caught.value).startswith("routes[0].plugins.limit-count." + message)
    assert "hunter2" not in str(caught.value)


def test_count_and_time_window_are_required() -> None:
    document = config()
    document["routes"][0]["plugins"]["limit-count"] = {"count": 2}
    with pytest.raises(ConfigError, match=r"^routes\[0\]\.plugins\.limit-count\.time_window: required$"):
        Gateway.from_dict(document)


def test_a_consumer_plugin_is_placed_on_the_consumer() -> None:
    with pytest.raises(ConfigError, match=r"^consumers\[0\]\.plugins\.limit-count\.count: "):
        Gateway.from_dict(config({"count": -1}, on="consumer"))


def test_the_redis_password_is_never_shown() -> None:
    plugin = LimitCountPlugin(
        count=1, time_window=1, policy="redis", redis_host="h", redis_password="hunter2"
    )
    assert "hunter2" not in repr(plugin)
    assert "hunter2" not in repr(plugin.redis_target())
    assert "hunter2" not in repr(
        LimitCountPlugin(count=1, time_window=1, policy="redis", redis_url="redis://:hunter2@h/0")
    )


def test_priority_and_name_are_apisix_s() -> None:
    assert (LimitCountPlugin.name, LimitCountPlugin.priority) == ("limit-count", 1002)


# --- counting -------------------------------------------------------------------------------------


def test_allowed_answers_carry_the_quota_and_the_third_is_rejected() -> None:
    gateway = build(config())
    assert quota(decide(gateway)) == (200, headers(2, 1, 60))
    assert quota(decide(gateway)) == (200, headers(2, 0, 60))
    rejected = decide(gateway)
    assert isinstance(rejected, Reject)
    assert rejected.status == 503
    assert rejected.body == BUSY_BODY
    assert rejected.headers == (("Content-Type", "text/plain; charset=utf-8"), *headers(2, 0, 60))
    assert rejected.reason == "rate_limited"
    assert quota(decide(gateway, "/api/free")) == (200, ())  # another route, no limit


def test_the_window_starts_with_the_first_request_and_resets() -> None:
    gateway = Gateway.from_dict(config())
    clock = FakeClock()
    gateway.environment.counters.memory = MemoryCounter(clock=clock)
    assert quota(decide(gateway)) == (200, headers(2, 1, 60))
    clock.now += 20.5
    assert quota(decide(gateway)) == (200, headers(2, 0, 40))  # 39.5 s left, rounded up
    clock.now += 39
    assert quota(decide(gateway))[0] == 503
    clock.now += 0.5  # the window has ended: a new one starts with this request
    assert quota(decide(gateway)) == (200, headers(2, 1, 60))


def test_rejected_requests_count_too() -> None:
    gateway = build(config({"count": 1}))
    for _ in range(3):
        decide(gateway)
    assert quota(decide(gateway)) == (503, headers(1, 0, 60))


def test_rejected_code_and_msg_give_apisix_s_body() -> None:
    gateway = build(config({"count": 1, "rejected_code": 429, "rejected_msg": "slow down"}))
    decide(gateway)
    rejected = decide(gateway)
    assert isinstance(rejected, Reject)
    assert (rejected.status, rejected.body) == (429, b'{"error_msg":"slow down"}\n')
    assert rejected.status_line == "429 Too Many Requests"


def test_without_quota_headers() -> None:
    gateway = build(config({"count": 1, "show_limit_quota_header": False}))
    assert quota(decide(gateway)) == (200, ())
    rejected = decide(gateway)
    assert isinstance(rejected, Reject)
    assert rejected.headers == (("Content-Type", "text/plain; charset=utf-8"),)


def test_clients_are_counted_apart_by_default_on_a_route() -> None:
    gateway = build(config({"count": 1}))
    assert quota(decide(gateway, client="192.0.2.1"))[0] == 200
    assert quota(decide(gateway, client="192.0.2.1"))[0] == 503
    assert quota(decide(gateway, client="192.0.2.2"))[0] == 200
    assert quota(decide(gateway, client="192.0.2.2", authorization=JACK))[0] == 503  # same address


def test_a_route_keyed_by_consumer_name_counts_each_consumer() -> None:
    gateway = build(config({"count": 1, "key": "consumer_name"}))
    assert quota(decide(gateway, client="192.0.2.1"))[0] == 200
    assert quota(decide(gateway, client="192.0.2.2"))[0] == 503  # alex again, from elsewhere
    assert quota(decide(gateway, authorization=JACK))[0] == 200


def test_a_limit_on_alex_limits_alex_on_every_route_and_not_jack() -> None:
    gateway = build(config({"count": 2}, on="consumer"))
    assert quota(decide(gateway, "/api/json", client="192.0.2.1")) == (200, headers(2, 1, 60))
    assert quota(decide(gateway, "/api/free", client="192.0.2.2")) == (200, headers(2, 0, 60))
    assert quota(decide(gateway, "/api/json"))[0] == 503
    for _ in range(5):
        assert quota(decide(gateway, authorization=JACK)) == (200, ())


def test_the_same_limit_from_a_consumer_group() -> None:
    document = config(on="nowhere")
    document["consumer_groups"] = [
        {"id": "free", "plugins": {"limit-count": {"count": 2, "time_window": 60, "rejected_code": 429}}}
    ]
    document["consumers"][0]["group_id"] = "free"  # alex
    document["consumers"].append(
        {
            "username": "bob",
            "group_id": "free",
            "plugins": {"basic-auth": {"username": "bob", "password": "hunter2"}},
        }
    )
    gateway = build(document)
    bob = basic("bob", "hunter2")
    # Each member of the group has the group's limit of its own, on every route (key consumer_name).
    assert quota(decide(gateway, "/api/json", client="192.0.2.1")) == (200, headers(2, 1, 60))
    assert quota(decide(gateway, "/api/free", client="192.0.2.2")) == (200, headers(2, 0, 60))
    assert quota(decide(gateway, "/api/free")) == (429, headers(2, 0, 60))
    assert quota(decide(gateway, "/api/json", authorization=bob)) == (200, headers(2, 1, 60))
    for _ in range(3):  # jack is in no group: no limit
        assert quota(decide(gateway, authorization=JACK)) == (200, ())


def test_a_group_limit_replaces_the_route_s() -> None:
    document = config({"count": 1})
    document["consumer_groups"] = [
        {"id": "free", "plugins": {"limit-count": {"count": 3, "time_window": 60}}}
    ]
    document["consumers"][0]["group_id"] = "free"
    gateway = build(document)
    assert quota(decide(gateway)) == (200, headers(3, 2, 60))  # alex: the group's
    assert quota(decide(gateway, authorization=JACK)) == (200, headers(1, 0, 60))  # jack: the route's


def test_a_consumer_s_own_limit_replaces_its_group_s() -> None:
    document = config({"count": 5}, on="consumer")
    document["consumer_groups"] = [
        {"id": "free", "plugins": {"limit-count": {"count": 1, "time_window": 60}}}
    ]
    document["consumers"][0]["group_id"] = "free"
    gateway = build(document)
    assert quota(decide(gateway)) == (200, headers(5, 4, 60))


def test_a_constant_key_counts_every_request_together() -> None:
    gateway = build(config({"count": 1, "key_type": "constant", "key": "all"}))
    assert quota(decide(gateway, client="192.0.2.1"))[0] == 200
    assert quota(decide(gateway, client="192.0.2.2", authorization=JACK))[0] == 503


def test_a_service_limit_counts_each_route_apart() -> None:
    gateway = build(config({"count": 1}, on="service"))
    assert quota(decide(gateway, "/api/json"))[0] == 200
    assert quota(decide(gateway, "/api/json"))[0] == 503
    assert quota(decide(gateway, "/api/free"))[0] == 200


def test_routes_with_the_same_limit_count_apart() -> None:
    plugin = LimitCountPlugin(count=1, time_window=60)
    gateway = Gateway(routes=[Route("/a", id="a", plugins=[plugin]), Route("/b", id="b", plugins=[plugin])])
    assert gateway.decide_now(RequestFacts("GET", "/a", client="192.0.2.1")).__class__ is Allow
    assert gateway.decide_now(RequestFacts("GET", "/b", client="192.0.2.1")).__class__ is Allow
    assert gateway.decide_now(RequestFacts("GET", "/a", client="192.0.2.1")).__class__ is Reject


def test_a_changed_limit_starts_a_new_count() -> None:
    gateway = build(config({"count": 1}))
    decide(gateway)
    assert quota(decide(gateway))[0] == 503
    gateway.replace(routes=Gateway.from_dict(config({"count": 2})).routes)
    assert quota(decide(gateway)) == (200, headers(2, 1, 60))


@pytest.mark.parametrize("key", ["remote_addr", "consumer_name", "route_id", "service_id", "constant"])
def test_the_quick_form_counts_with_the_phase(key: str, caplog: pytest.LogCaptureFixture) -> None:
    """With the decision log off, the gateway runs the quick form; with it on, the access phase: both
    count under the same key and answer the same."""
    limit = (
        {"count": 4, "key_type": "constant", "key": "all"} if key == "constant" else {"count": 4, "key": key}
    )
    gateway = build(config(limit))
    pipeline = gateway.compiled_routes[0].pipeline
    assert pipeline.quick_access is not None
    answers = []
    for index in range(5):
        if index % 2:
            with caplog.at_level(logging.INFO, logger="consumer_auth.auth"):
                answers.append(quota(decide(gateway)))
        else:
            answers.append(quota(decide(gateway)))
    assert answers == [(200, headers(4, left, 60)) for left in (3, 2, 1, 0)] + [(503, headers(4, 0, 60))]


@pytest.mark.parametrize("logged", [False, True])
def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(
    logged: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Keyed by address: a request from a trusted proxy counts against the client it forwards for, one
    from it without ``X-Forwarded-For`` against the proxy itself (the quick form and the phase alike)."""
    gateway = build(config(trusted_proxies=["10.0.0.0/8"]))

    def send(forwarded_for: str | None) -> tuple[int, tuple[tuple[str, str], ...]]:
        request = RequestFacts(
            "GET",
            "/api/json",
            authorization=(ALEX,),
            client="10.0.0.1",
            forwarded_for=(forwarded_for,) if forwarded_for is not None else (),
        )
        with caplog.at_level(logging.INFO if logged else logging.WARNING, logger="consumer_auth.auth"):
            return quota(gateway.decide_now(request))

    assert send("192.0.2.1") == (200, headers(2, 1, 60))
    assert send("192.0.2.2") == (200, headers(2, 1, 60))
    assert send("192.0.2.1") == (200, headers(2, 0, 60))
    assert send(None) == (200, headers(2, 1, 60))
    assert send("192.0.2.1")[0] == 503


def test_policy_redis_has_no_quick_form() -> None:
    gateway = Gateway.from_dict(config({"policy": "redis", "redis_url": REDIS_URL}))  # connects at no request
    assert gateway.compiled_routes[0].pipeline.quick_access is None


def test_a_new_window_has_exactly_its_seconds_left() -> None:
    """``(now + window) - now`` rounds above ``window`` at some clock readings: a new window must still
    answer ``X-RateLimit-Reset: 3600``, not 3601."""
    clock = FakeClock()
    clock.now = 1000.1  # (1000.1 + 3600.0) - 1000.1 == 3600.0000000000005
    counter = MemoryCounter(clock=clock)
    assert counter.incoming("k", 3600.0) == (1, 3600.0)


def test_the_memory_counter_is_bounded() -> None:
    clock = FakeClock()
    counter = MemoryCounter(max_entries=3, clock=clock)
    for index in range(10):
        assert counter.incoming(f"k{index}", 60) == (1, 60)
    assert len(counter) == 3
    assert counter.incoming("k9", 60) == (2, 60)  # the newest are kept
    assert counter.incoming("k0", 60) == (1, 60)  # the oldest were forgotten


def test_the_memory_counter_counts_every_concurrent_request_once() -> None:
    counter = MemoryCounter()
    assert _hammer(counter, 8, 250) == 2000


def _hammer(counter: Any, threads: int, each: int) -> int:
    """Count ``threads * each`` requests against one key from several threads; return the last count."""
    seen: list[int] = []
    start = threading.Barrier(threads)

    def work() -> None:
        start.wait()
        for _ in range(each):
            seen.append(counter.incoming("shared", 3600)[0])

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(seen) == list(range(1, threads * each + 1))  # each count handed out exactly once
    return max(seen)


# --- every mode -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "status", "body"),
    [
        pytest.param({}, 503, BUSY_BODY, id="default"),
        pytest.param(
            {"rejected_code": 429, "rejected_msg": "Too many"}, 429, b'{"error_msg":"Too many"}\n', id="msg"
        ),
    ],
)
def test_every_mode_sends_the_quota_headers_and_the_exact_rejection(
    mode: Mode, limit: dict[str, Any], status: int, body: bytes
) -> None:
    name = f"limit-count-{uuid.uuid4().hex}"
    configs.CONFIGS[name] = config(limit)
    try:
        for remaining in (1, 0):
            reply = mode.request(name, "GET", "/api/json", [("Authorization", ALEX)])
            assert reply.status == 200, (reply.status, reply.body)
            assert reply.headers["x-ratelimit-limit"] == "2"
            assert reply.headers["x-ratelimit-remaining"] == str(remaining)
            assert 1 <= int(reply.headers["x-ratelimit-reset"]) <= 60
        reply = mode.request(name, "GET", "/api/json", [("Authorization", ALEX)])
        assert (reply.status, reply.body) == (status, body)
        assert reply.headers["content-type"] == "text/plain; charset=utf-8"
        assert reply.headers["content-length"] == str(len(body))
        assert reply.headers["x-ratelimit-limit"] == "2"
        assert reply.headers["x-ratelimit-remaining"] == "0"
        assert 1 <= int(reply.headers["x-ratelimit-reset"]) <= 60
        free = mode.request(name, "GET", "/api/free", [("Authorization", ALEX)])
        assert free.status == 200
        assert "x-ratelimit-limit" not in free.headers
    finally:
        del configs.CONFIGS[name]


# --- Redis ----------------------------------------------------------------------------------------


def redis_limit(prefix: str, **extra: Any) -> dict[str, Any]:
    return {"policy": "redis", "redis_host": "127.0.0.1", "redis_port": 6379, "redis_prefix": prefix, **extra}


def test_redis_counts_with_one_expiring_key(redis_prefix: str) -> None:
    import redis

    gateway = build(config(redis_limit(redis_prefix, time_window=30)))
    first = gateway.decide(facts("/api/json"))
    assert not isinstance(first, Allow | Reject)  # it waits on the network: off the event loop
    assert quota(first.run()) == (200, headers(2, 1, 30))  # a new window: its whole length left
    assert quota(decide(gateway))[0] == 200
    rejected = decide(gateway)
    assert isinstance(rejected, Reject)
    status, sent = quota(rejected)
    assert (status, sent[:2]) == (503, headers(2, 0, 30)[:2])
    assert 1 <= int(sent[2][1]) <= 30
    assert rejected.body == BUSY_BODY
    client = redis.Redis.from_url(REDIS_URL)
    keys = [key.decode() for key in client.scan_iter(match=redis_prefix + "*")]
    assert keys == [f"{redis_prefix}lc:2/30:route:json|a:192.0.2.10"]
    assert client.get(keys[0]) == b"3"
    assert 0 < client.pttl(keys[0]) <= 30_000
    client.close()


def test_redis_counts_every_concurrent_request_once(redis_prefix: str) -> None:
    counter = RedisCounter(REDIS_URL, key_prefix=redis_prefix)
    try:
        assert _hammer(counter, 8, 25) == 200
    finally:
        counter.close()


def test_a_redis_url_and_a_refused_password(redis_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    plugin = LimitCountPlugin(
        count=1, time_window=5, policy="redis", redis_url=REDIS_URL, redis_prefix=redis_prefix
    )
    gateway = Gateway(routes=[Route("/x", id="x", plugins=[plugin])])
    assert quota(gateway.decide_now(RequestFacts("GET", "/x", client="192.0.2.1")))[0] == 200
    assert quota(gateway.decide_now(RequestFacts("GET", "/x", client="192.0.2.1")))[0] == 503
    wrong = LimitCountPlugin(
        count=1,
        time_window=5,
        policy="redis",
        redis_host="127.0.0.1",
        redis_username="nobody",
        redis_password="do-not-log-me",
        redis_prefix=redis_prefix,
    )
    gateway = Gateway(routes=[Route("/x", id="x", plugins=[wrong])])
    with caplog.at_level(logging.WARNING, logger="consumer_auth.limit_count"):
        for _ in range(3):  # Redis refuses the login: the requests go through, uncounted
            assert quota(gateway.decide_now(RequestFacts("GET", "/x", client="192.0.2.1"))) == (200, ())
    assert len(caplog.records) == 1
    assert "do-not-log-me" not in repr(caplog.records[0].__dict__)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A redis-server of this test's own on a free loopback port (no persistence)."""
    redis_or_skip()  # the redis package, and the service CI provides
    if not Path(REDIS_SERVER).is_file():
        service_unavailable("redis-server", f"{REDIS_SERVER} not found")
    port = _free_port()
    server = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        deadline = time.monotonic() + 30
        while True:  # until it accepts connections (a generous deadline, not a timed assert)
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.02)
        client.close()
        yield server, url
    finally:
        server.kill()
        server.wait()


def test_a_redis_stopped_mid_run_lets_requests_through_with_one_warning(
    private_redis: tuple[subprocess.Popen[bytes], str], caplog: pytest.LogCaptureFixture
) -> None:
    server, url = private_redis
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    gateway = Gateway.from_dict(
        config(
            {
                "count": 2,
                "policy": "redis",
                "redis_host": "127.0.0.1",
                "redis_port": port,
                "redis_timeout": 200,
            }
        )
    )
    with caplog.at_level(logging.WARNING, logger="consumer_auth.limit_count"):
        assert quota(decide(gateway)) == (200, headers(2, 1, 60))
        server.kill()
        server.wait()
        for _ in range(5):  # over the limit, but nothing can count: every request goes through
            assert quota(decide(gateway)) == (200, ())
    warnings = [r for r in caplog.records if r.name == "consumer_auth.limit_count"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert warnings[0].getMessage().startswith("limit-count Redis unavailable (")
    assert warnings[0].getMessage().endswith("requests are let through uncounted until it answers again")


def test_two_serve_processes_share_one_count_in_redis(redis_prefix: str, tmp_path: Path) -> None:
    upstream = start_upstream(echo, "limit-count")
    document = config(redis_limit(redis_prefix, count=3))
    document["services"][0]["upstream"] = upstream.url
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(document))
    processes = [Process([CONSUMER_AUTH, "serve", "--config", str(path), "--port", "0"]) for _ in range(2)]
    try:
        first, second = (process.uvicorn_port() for process in processes)
        for port, remaining in ((first, 2), (second, 1), (first, 0)):
            reply = request(port, "GET", "/api/json", [("Authorization", ALEX)])
            assert reply.status == 200, (reply.status, reply.body)
            assert reply.headers["x-ratelimit-remaining"] == str(remaining)
        for port in (second, first):
            reply = request(port, "GET", "/api/json", [("Authorization", ALEX)])
            assert (reply.status, reply.body) == (503, BUSY_BODY)
            assert reply.headers["x-ratelimit-limit"] == "3"
            assert reply.headers["x-ratelimit-remaining"] == "0"
        assert request(second, "GET", "/api/free", [("Authorization", ALEX)]).status == 200
    finally:
        for process in processes:
            assert process.terminate() == 0


def test_an_allow_with_other_response_headers_keeps_every_other_field() -> None:
    import dataclasses

    gateway = build(config())
    decision = decide(gateway)
    assert isinstance(decision, Allow)
    base = dataclasses.replace(decision, response_headers=())
    copied = base.with_response_headers(decision.response_headers)
    for item in dataclasses.fields(Allow):
        assert getattr(copied, item.name) == getattr(decision, item.name), item.name
    assert copied == decision


def test_the_example_of_the_plugins_page(tmp_path: Path) -> None:
    """docs/plugins.md shows a configuration of limits: it builds, and counts as the page says."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text()
    section = page.split("## `limit-count`: requests per window", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "example.yaml"
    path.write_text(block)
    gateway = Gateway.from_file(path)
    jack = gateway.decide_now(facts("/json", basic("jack", "654321")))
    alex = gateway.decide_now(facts("/json", ALEX))
    assert quota(jack) == (200, headers(100, 99, 60))  # the group's, per consumer
    assert quota(alex) == (200, headers(10000, 9999, 3600))  # alex's own


def test_policy_redis_without_the_redis_package_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "redis", None)  # import redis now fails, and find_spec finds nothing
    with pytest.raises(ConfigError) as caught:
        Gateway.from_dict(config({"policy": "redis", "redis_host": "127.0.0.1"}))
    assert str(caught.value) == (
        "routes[0].plugins.limit-count.policy: 'redis' needs the redis package "
        "(pip install 'consumer-auth[redis]')"
    )


def test_checking_a_configuration_never_reaches_redis(tmp_path: Path) -> None:
    document = config({"policy": "redis", "redis_host": "192.0.2.1", "redis_password": "hunter2"})
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(document))
    done = subprocess.run(
        [CONSUMER_AUTH, "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert "hunter2" not in done.stdout


def test_metrics_count_limited_answers_by_status() -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from werkzeug.test import Client

    from consumer_auth.metrics import Metrics
    from support import echo_wsgi

    metrics = Metrics(CollectorRegistry())
    client = Client(build(config({"count": 3})).wsgi(echo_wsgi, metrics=metrics))
    statuses = [client.get("/api/json", headers={"Authorization": ALEX}).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 503, 503]
    text = generate_latest(metrics.registry).decode()
    lines = [line for line in text.splitlines() if line.startswith("consumer_auth_http_status_total{")]
    by_code = {line.split('code="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1]) for line in lines}
    assert by_code == {"200": 3.0, "503": 2.0}
    assert 'reason="rate_limited"' in text
