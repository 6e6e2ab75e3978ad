"""Upstream health checks (``upstream.checks``, SPEC §11): active probes and passive marking, through both
proxies, against real upstreams on loopback whose health the tests switch."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from consumer_auth import ConfigError, Gateway
from consumer_auth.upstream import Upstream
from proxy_servers import (
    ASGIServer,
    Handler,
    UpstreamServer,
    WSGIServer,
    echo,
    refused_port,
    request,
    start_upstream,
)
from support import basic

ALEX = [("Authorization", basic("alex", "123456"))]
PROXIES = [pytest.param("asgi", id="asgi-proxy"), pytest.param("wsgi", id="wsgi-proxy")]


_started: list[Callable[[], None]] = []


@pytest.fixture(autouse=True)
def _stop_after_each_test() -> Iterator[None]:
    """Stop this test's proxies (and so their probes) and upstreams when it ends."""
    yield
    while _started:
        _started.pop()()


class Node:
    """An upstream whose ``/health`` answer and whose answer to traffic the test sets."""

    def __init__(self, name: str) -> None:
        self.health = 200
        self.traffic = 200
        self.probes = 0
        self.served = 0
        self.server: UpstreamServer = start_upstream(self._behaviour, name)
        _started.append(self.server.stop)

    def _behaviour(self, handler: Handler) -> None:
        if handler.path == "/health":
            self.probes += 1
            handler.answer(self.health, b"{}")
            return
        self.served += 1
        if self.traffic == 200:
            echo(handler)
        else:
            handler.answer(self.traffic, b'{"broken":true}')

    @property
    def authority(self) -> str:
        return self.server.authority


def gateway(upstream: dict[str, Any]) -> Gateway:
    return Gateway.from_dict(
        {
            "consumers": [
                {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}}
            ],
            "routes": [{"id": "r", "uri": "/*", "plugins": {"basic-auth": {}}, "upstream": upstream}],
        }
    )


class Proxy:
    def __init__(self, kind: str, upstream: dict[str, Any]) -> None:
        built = gateway(upstream)
        upstream_object = built.compiled_routes[0].upstream
        assert upstream_object is not None
        self.upstream: Upstream = upstream_object
        server: ASGIServer | WSGIServer
        if kind == "asgi":
            app: Any = built.asgi_proxy()
            server = ASGIServer(app)
        else:
            app = built.wsgi_proxy()
            server = WSGIServer(app)
        _started.append(server.stop)
        self.port = server.port
        self.health = app.health

    def down(self) -> set[str]:
        return {node.authority for node in self.health.unhealthy(self.upstream)}

    def get(self) -> tuple[int, str | None]:
        reply = request(self.port, "GET", "/anything", ALEX)
        server = json.loads(reply.body).get("server") if reply.status == 200 else None
        return reply.status, server


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def active(**fields: Any) -> dict[str, Any]:
    return {
        "http_path": "/health",
        "interval": 0.05,
        "timeout": 2,
        "healthy": {"successes": 2},
        "unhealthy": {"http_failures": 2, "tcp_failures": 1},
        **fields,
    }


@pytest.mark.parametrize("kind", PROXIES)
def test_an_unhealthy_node_gets_no_traffic_until_it_recovers(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = Node("a"), Node("b")
    b.health = 503
    with caplog.at_level(logging.INFO, logger="consumer_auth.proxy"):
        proxy = Proxy(kind, {"nodes": {a.authority: 1, b.authority: 1}, "checks": {"active": active()}})
        wait_until(lambda: proxy.down() == {b.authority}, "b marked unhealthy by its probes")
        served = b.served
        assert {proxy.get() for _ in range(6)} == {(200, "a")}
        assert b.served == served
        probes = b.probes
        wait_until(lambda: b.probes >= probes + 3, "unhealthy b still probed")
        b.health = 200
        wait_until(lambda: not proxy.down(), "b healthy again")
        assert {proxy.get()[1] for _ in range(6)} == {"a", "b"}
    changes = [r.getMessage() for r in caplog.records if "healthy" in r.getMessage()]
    assert changes == [
        f"upstream node {b.authority} is unhealthy (2 http failures in a row)",
        f"upstream node {b.authority} is healthy again (2 successes in a row)",
    ]


@pytest.mark.parametrize("kind", PROXIES)
def test_a_node_that_refuses_connections_is_taken_out(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    a = Node("a")
    dead = f"127.0.0.1:{refused_port()}"
    proxy = Proxy(kind, {"nodes": {a.authority: 1, dead: 1}, "checks": {"active": active(type="tcp")}})
    wait_until(lambda: proxy.down() == {dead}, "the dead node marked unhealthy")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="consumer_auth.proxy"):
        assert {proxy.get() for _ in range(6)} == {(200, "a")}
    assert not [r for r in caplog.records if "upstream connection failed" in r.getMessage()]


@pytest.mark.parametrize("kind", PROXIES)
def test_every_node_unhealthy_is_502(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    a, b = Node("a"), Node("b")
    a.health = b.health = 500
    proxy = Proxy(kind, {"nodes": {a.authority: 1, b.authority: 1}, "checks": {"active": active()}})
    wait_until(lambda: proxy.down() == {a.authority, b.authority}, "both nodes unhealthy")
    served = a.served + b.served
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="consumer_auth.proxy"):
        reply = request(proxy.port, "GET", "/anything", ALEX)
    assert (reply.status, reply.body) == (502, b'{"error_msg":"502 Bad Gateway"}\n')
    assert a.served + b.served == served
    assert [r.getMessage() for r in caplog.records] == [
        "every upstream node is unhealthy (upstream -, route r)"
    ]
    a.health = 200
    wait_until(lambda: proxy.down() == {b.authority}, "a healthy again")
    assert proxy.get() == (200, "a")


@pytest.mark.parametrize("kind", PROXIES)
def test_passive_checks_mark_a_failing_node_from_its_traffic(kind: str) -> None:
    a, b = Node("a"), Node("b")
    b.traffic = 500  # its probe still answers 200: only the traffic shows the fault
    checks = {
        # Probes rarely, so that only the passive check can take b out within the test.
        "active": active(interval=300),
        "passive": {"unhealthy": {"http_statuses": [500], "http_failures": 2}},
    }
    proxy = Proxy(kind, {"nodes": {a.authority: 1, b.authority: 1}, "checks": checks})
    wait_until(lambda: a.probes >= 1 and b.probes >= 1, "the first probes")
    statuses = [proxy.get()[0] for _ in range(4)]  # a, b, a, b: b's second 500 takes it out
    assert sorted(statuses) == [200, 200, 500, 500]
    assert proxy.down() == {b.authority}
    served = b.served
    assert {proxy.get() for _ in range(6)} == {(200, "a")}
    assert b.served == served


@pytest.mark.parametrize("kind", PROXIES)
def test_passive_tcp_failures_mark_a_node(kind: str) -> None:
    a = Node("a")
    dead = f"127.0.0.1:{refused_port()}"
    checks = {"active": active(interval=300, type="tcp"), "passive": {"unhealthy": {"tcp_failures": 1}}}
    proxy = Proxy(kind, {"nodes": {a.authority: 1}, "checks": checks})
    assert proxy.get() == (200, "a")
    # The passive counter of a node comes from the traffic: a second upstream shows it for a dead node.
    other = Proxy(kind, {"nodes": {dead: 1, a.authority: 1}, "checks": checks})
    wait_until(lambda: other.down() == {dead}, "the dead node marked")
    assert {other.get() for _ in range(4)} == {(200, "a")}


@pytest.mark.parametrize(
    ("checks", "message"),
    [
        pytest.param({"passive": {}}, "routes[0].upstream.checks.active: required", id="passive-alone"),
        pytest.param(
            {"active": {"intervl": 1}}, "routes[0].upstream.checks.active.intervl: unknown key", id="typo"
        ),
        pytest.param(
            {"active": {"healthy": {"successes": 0}}},
            "routes[0].upstream.checks.active.healthy.successes: ",
            id="zero-successes",
        ),
        pytest.param(
            {"active": {"unhealthy": {"http_statuses": [700]}}},
            "routes[0].upstream.checks.active.unhealthy.http_statuses[0]: ",
            id="status",
        ),
        pytest.param(
            {"active": {"http_path": "health"}}, "routes[0].upstream.checks.active.http_path: ", id="path"
        ),
        pytest.param({"active": {"type": "udp"}}, "routes[0].upstream.checks.active.type: ", id="type"),
        pytest.param({"active": {"timeout": -1}}, "routes[0].upstream.checks.active.timeout: ", id="timeout"),
        pytest.param(
            {"active": {}, "passive": {"unhealthy": {"timeouts": "3"}}},
            "routes[0].upstream.checks.passive.unhealthy.timeouts: ",
            id="passive-count",
        ),
    ],
)
def test_check_mistakes_name_their_place(checks: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        gateway({"nodes": {"127.0.0.1:1": 1}, "checks": checks})
    assert str(raised.value).startswith(message)


def test_apisix_intervals_and_defaults() -> None:
    upstream = Upstream.parse(
        {
            "nodes": {"127.0.0.1:1": 1},
            "checks": {"active": {"healthy": {"interval": 2}, "unhealthy": {"interval": 5}}},
        }
    )
    assert upstream.checks is not None
    probe = upstream.checks.active
    assert (probe.healthy_interval, probe.unhealthy_interval, probe.http_path, probe.timeout) == (
        2,
        5,
        "/",
        1,
    )
    assert (probe.healthy_successes, probe.http_failures, probe.tcp_failures, probe.timeouts) == (2, 5, 2, 3)
    assert probe.healthy_statuses == {200, 302}
