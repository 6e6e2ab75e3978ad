"""Prometheus metrics (SPEC §11, ``docs/metrics.md``): exact counts from a real ``consumer-auth serve
--workers 2 --metrics``, in-process counting in every adapter, bounded labels, node health, and nothing
loaded or measured when metrics are off."""

from __future__ import annotations

import asyncio
import copy
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import Client

import configs
from consumer_auth import Gateway
from consumer_auth.metrics import Metrics, wsgi_app
from consumer_auth.proxy._health import Health, Outcome
from consumer_auth.sansio.upstream import Upstream
from proxy_servers import CONSUMER_AUTH, Handler, Process, UpstreamServer, request, start_upstream
from support import basic

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

JACK = {"username": "jack1", "plugins": {"basic-auth": {"username": "jack2019", "password": "123456"}}}
SERVICE = "basic-auth-app"


def samples(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def status(found: Samples, code: int, consumer: str = "", route: str = "json") -> float:
    service = SERVICE if route else ""
    return value(
        found,
        "consumer_auth_http_status_total",
        code=str(code),
        route=route,
        service=service,
        consumer=consumer,
    )


def reason(found: Samples, outcome: str, code: str) -> float:
    return value(
        found, "consumer_auth_auth_total", outcome=outcome, reason=code, route="json", service=SERVICE
    )


def latency_count(found: Samples, kind: str) -> float:
    return value(found, "consumer_auth_http_latency_seconds_count", type=kind, route="json", service=SERVICE)


def guide(upstream: str) -> dict[str, Any]:
    document = copy.deepcopy(configs.GUIDE)
    document["services"][0]["upstream"] = upstream
    document["consumers"].append(copy.deepcopy(JACK))
    return document


def get(port: int, credentials: tuple[str, str] | None) -> int:
    headers = [("Host", "example.com")]
    if credentials is not None:
        headers.append(("Authorization", basic(*credentials)))
    return request(port, "GET", "/v1/json", headers).status


def slideshow(handler: Handler) -> None:
    handler.answer(200, b'{"slideshow": {}}\n')


@pytest.fixture(scope="module")
def upstream() -> UpstreamServer:
    return start_upstream(slideshow, "httpbin")


# -- consumer-auth serve --workers 2 --metrics -------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path, upstream: UpstreamServer) -> Iterator[tuple[Process, int, int, list[int]]]:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(guide(upstream.url)))
    process = Process(
        [CONSUMER_AUTH, "serve", "--config", str(path), "--port", "0", "--workers", "2"]
        + ["--metrics", "127.0.0.1:0", "--no-access-log"]
    )
    metrics_port = int(
        process.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", process.stderr).group(1)
    )
    port = process.uvicorn_port(2)
    workers = [
        int(process.wait_for(r"Started server process \[(\d+)\]", process.stderr, count=n).group(1))
        for n in (1, 2)
    ]
    yield process, port, metrics_port, workers
    process.kill()


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:  # noqa: S310 - loopback
        return samples(reply.read().decode())


def test_serve_counts_every_worker_exactly(served: tuple[Process, int, int, list[int]]) -> None:
    process, port, metrics_port, (first, second) = served
    # A stopped worker accepts no connection: each phase is served by the other worker alone, so the
    # totals are exact only if both workers' counts reach the listener.
    os.kill(second, signal.SIGSTOP)
    try:  # the guide's four requests, on the first worker
        assert [get(port, c) for c in (None, ("alex", "123456"), ("wrong-user", "x"), ("alex", "wrong"))] == [
            401,
            200,
            401,
            401,
        ]
    finally:
        os.kill(second, signal.SIGCONT)
    os.kill(first, signal.SIGSTOP)
    try:  # jack logs in as jack2019 (three times), alex twice more, on the second worker
        assert [get(port, ("jack2019", "123456")) for _ in range(3)] == [200] * 3
        assert [get(port, ("alex", "123456")) for _ in range(2)] == [200] * 2
    finally:
        os.kill(first, signal.SIGCONT)

    # A proxied request is counted when its exchange is over, just after its last byte went out: the
    # client may read the answer first. Wait for all nine, then check every count.
    found = scrape(metrics_port)
    deadline = time.monotonic() + 30
    while latency_count(found, "decision") < 9 and time.monotonic() < deadline:
        time.sleep(0.05)
        found = scrape(metrics_port)
    assert status(found, 200, "alex") == 3
    assert status(found, 200, "jack1") == 3
    assert status(found, 401) == 3
    assert reason(found, "allow", "authenticated") == 6
    assert reason(found, "reject", "missing_authorization") == 1
    assert reason(found, "reject", "unknown_username") == 1
    assert reason(found, "reject", "wrong_password") == 1
    assert latency_count(found, "decision") == 9
    assert latency_count(found, "upstream") == 6
    names = {labels for (_, labels) in found}
    assert not [
        labels
        for labels in names
        if ("consumer", "wrong-user") in labels or ("consumer", "jack2019") in labels
    ]
    assert process.terminate() == 0


def test_serve_refuses_a_malformed_or_busy_metrics_address(tmp_path: Path, upstream: UpstreamServer) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(guide(upstream.url)))
    base = [CONSUMER_AUTH, "serve", "--config", str(path), "--port", "0"]
    done = subprocess.run(
        [*base, "--metrics", "9091"], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stderr) == (
        1,
        "consumer-auth: error: --metrics: expected HOST:PORT (such as 127.0.0.1:9091), got '9091'\n",
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        done = subprocess.run(
            [*base, "--metrics", f"127.0.0.1:{busy}"], capture_output=True, text=True, timeout=60, check=False
        )
    assert done.returncode == 1
    assert (
        done.stderr
        == f"consumer-auth: error: --metrics: cannot listen on 127.0.0.1:{busy} (Address already in use)\n"
    )


# -- in process ------------------------------------------------------------------------------------------


def app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("201 Created", [("Content-Type", "text/plain")])
    return [b"made"]


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"made"})


def authorization(user: str, password: str = "123456") -> dict[str, str]:  # noqa: S107 - the guide's
    return {"Authorization": basic(user, password), "Host": "example.com"}


def expected_counts(found: Samples) -> None:
    assert status(found, 201, "alex") == 2
    assert status(found, 201, "jack1") == 1
    assert status(found, 401) == 2
    assert status(found, 404, route="") == 1
    assert reason(found, "reject", "unknown_username") == 1
    assert (
        value(found, "consumer_auth_auth_total", outcome="reject", reason="no_route", route="", service="")
        == 1
    )
    assert latency_count(found, "decision") == 5
    assert latency_count(found, "upstream") == 0


def test_the_wsgi_middleware_counts_each_answer() -> None:
    metrics = Metrics(CollectorRegistry())
    client = Client(Gateway.from_dict(guide("http://127.0.0.1:9")).wsgi(app, metrics=metrics))
    for headers in (authorization("alex"), authorization("alex"), authorization("jack2019")):
        assert client.get("/v1/json", headers=headers).status_code == 201
    assert client.get("/v1/json", headers={"Host": "example.com"}).status_code == 401
    assert client.get("/v1/json", headers=authorization("nobody")).status_code == 401
    assert client.get("/elsewhere").status_code == 404
    expected_counts(samples(generate_latest(metrics.registry).decode()))


def test_the_asgi_middleware_counts_each_answer() -> None:
    metrics = Metrics(CollectorRegistry())
    wrapped = Gateway.from_dict(guide("http://127.0.0.1:9")).asgi(asgi_app, metrics=metrics)

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=wrapped)
        async with httpx.AsyncClient(transport=transport, base_url="http://example.com") as client:
            asked = [authorization("alex"), authorization("alex"), authorization("jack2019")]
            asked += [{"Host": "example.com"}, authorization("nobody")]
            codes = [(await client.get("/v1/json", headers=headers)).status_code for headers in asked]
            return [*codes, (await client.get("/elsewhere")).status_code]

    assert asyncio.run(run()) == [201, 201, 201, 401, 401, 404]
    expected_counts(samples(generate_latest(metrics.registry).decode()))


def test_the_wsgi_proxy_counts_the_upstream_too(upstream: UpstreamServer) -> None:
    metrics = Metrics(CollectorRegistry())
    proxy = Gateway.from_dict(guide(upstream.url)).wsgi_proxy(metrics=metrics)
    client = Client(proxy)
    for headers, code in ((authorization("alex"), 200), (authorization("alex", "wrong"), 401)):
        reply = client.get("/v1/json", headers=headers)
        assert reply.status_code == code
        reply.get_data()
        reply.close()  # the proxy counts an exchange once its body is closed
    found = samples(generate_latest(metrics.registry).decode())
    assert (status(found, 200, "alex"), status(found, 401)) == (1, 1)
    assert (latency_count(found, "decision"), latency_count(found, "upstream")) == (2, 1)
    proxy.close()


def test_an_unknown_username_sent_1000_times_creates_no_series() -> None:
    metrics = Metrics(CollectorRegistry())
    client = Client(Gateway.from_dict(guide("http://127.0.0.1:9")).wsgi(app, metrics=metrics))
    assert client.get("/v1/json", headers=authorization("stranger-0")).status_code == 401
    before = samples(generate_latest(metrics.registry).decode())
    for n in range(1, 1000):
        assert client.get("/v1/json", headers=authorization(f"stranger-{n}", f"pw-{n}")).status_code == 401
    text = generate_latest(metrics.registry).decode()
    after = samples(text)
    assert set(after) == set(before)  # the same series, counted up
    assert reason(after, "reject", "unknown_username") == 1000
    assert "stranger" not in text
    assert "pw-" not in text


def test_the_metrics_app_serves_the_registry() -> None:
    metrics = Metrics(CollectorRegistry())
    Client(Gateway.from_dict(guide("http://127.0.0.1:9")).wsgi(app, metrics=metrics)).get("/elsewhere")
    reply = Client(wsgi_app(metrics)).get("/metrics")
    assert reply.status_code == 200
    assert 'consumer_auth_http_status_total{code="404",consumer="",route="",service=""} 1.0' in reply.text


def test_a_metrics_argument_of_another_type_is_refused() -> None:
    with pytest.raises(TypeError, match="metrics: expected a consumer_auth.metrics.Metrics or a bool"):
        Gateway.from_dict(guide("http://127.0.0.1:9")).wsgi(app, metrics="yes")  # type: ignore[arg-type]


# -- node health --------------------------------------------------------------------------------------


def test_node_health_follows_the_checks() -> None:
    metrics = Metrics(CollectorRegistry())
    upstream = Upstream.parse(
        {
            "nodes": {"127.0.0.1:9001": 1, "127.0.0.1:9002": 1},
            "checks": {
                "active": {"http_path": "/health", "interval": 300},
                "passive": {"unhealthy": {"tcp_failures": 2}},
            },
        }
    )
    first, second = upstream.nodes
    health = Health(on_change=metrics.node_health)

    def gauge() -> dict[str, float]:
        found = samples(generate_latest(metrics.registry).decode())
        return {
            dict(labels)["node"]: v
            for (name, labels), v in found.items()
            if name == "consumer_auth_upstream_status"
        }

    health.report_status(upstream, first, 200)
    health.report_status(upstream, second, 200)
    assert gauge() == {"127.0.0.1:9001": 1, "127.0.0.1:9002": 1}
    health.report_fault(upstream, second, Outcome.TCP_FAILURE)
    assert gauge()["127.0.0.1:9002"] == 1  # one failure of the two it takes
    health.report_fault(upstream, second, Outcome.TCP_FAILURE)
    assert gauge() == {"127.0.0.1:9001": 1, "127.0.0.1:9002": 0}


# -- off ---------------------------------------------------------------------------------------------------


def test_without_metrics_prometheus_client_is_never_imported(upstream: UpstreamServer) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from werkzeug.test import Client
        from consumer_auth import Gateway, cli
        from consumer_auth.proxy.asgi import ASGIProxy
        config = {guide(upstream.url)!r}
        gateway = Gateway.from_dict(config)
        def app(environ, start_response):
            start_response("200 OK", [])
            return [b"ok"]
        Client(gateway.wsgi(app)).get("/v1/json", headers={{"Host": "example.com"}})
        gateway.asgi(app)
        Client(gateway.wsgi_proxy()).get("/v1/json", headers={{"Host": "example.com"}})
        gateway.asgi_proxy()
        cli._parser().parse_args(["serve", "--config", "x.yaml", "--workers", "2"])
        assert "prometheus_client" not in sys.modules, "imported"
        assert "consumer_auth.metrics" not in sys.modules, "imported"
        print("not imported")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "not imported\n", "")


def test_threads_counting_at_once_lose_no_count() -> None:
    metrics = Metrics(CollectorRegistry())
    wrapped = Gateway.from_dict(guide("http://127.0.0.1:9")).wsgi(app, metrics=metrics)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/v1/json", "HTTP_HOST": "example.com"}
    environ["HTTP_AUTHORIZATION"] = basic("alex", "123456")

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return None

    def requests() -> None:
        for _ in range(500):
            list(wrapped(dict(environ), start_response))

    threads = [threading.Thread(target=requests) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = samples(generate_latest(metrics.registry).decode())
    assert status(found, 201, "alex") == 4000
    assert latency_count(found, "decision") == 4000


def test_multiprocess_mode_counts_through_prometheus_client(tmp_path: Path) -> None:
    # As in each worker of `serve --workers N`: the library's own objects write to the directory, and a
    # multiprocess registry adds up what every process wrote (here one process, in a fresh interpreter).
    script = textwrap.dedent(
        f"""
        from werkzeug.test import Client
        from consumer_auth import Gateway
        from consumer_auth.metrics import Metrics, multiprocess_registry
        from consumer_auth.sansio.upstream import UpstreamNode
        from prometheus_client import generate_latest
        metrics = Metrics(None)
        def app(environ, start_response):
            start_response("201 Created", [])
            return [b"made"]
        client = Client(Gateway.from_dict({guide("http://127.0.0.1:9")!r}).wsgi(app, metrics=metrics))
        for login in ("alex", "alex", "nobody"):
            client.get("/v1/json", headers={{"Host": "example.com", "Authorization": {basic("alex", "123456")!r} if login == "alex" else "Basic bm9ib2R5Ong="}})
        metrics.node_health(UpstreamNode("127.0.0.1", 9001), False)
        print(generate_latest(multiprocess_registry({str(tmp_path)!r})).decode())
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False, env=env
    )
    assert done.returncode == 0, done.stderr
    found = samples(done.stdout)
    assert status(found, 201, "alex") == 2
    assert status(found, 401) == 1
    assert reason(found, "reject", "unknown_username") == 1
    assert latency_count(found, "decision") == 3
    assert value(found, "consumer_auth_upstream_status", node="127.0.0.1:9001") == 0


def test_serve_with_one_worker_counts_in_its_own_process(tmp_path: Path, upstream: UpstreamServer) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(guide(upstream.url)))
    process = Process(
        [CONSUMER_AUTH, "serve", "--config", str(path), "--port", "0", "--metrics", "127.0.0.1:0"]
    )
    line = process.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)/metrics$", process.stderr)
    port = process.uvicorn_port()
    assert [get(port, ("alex", "123456")), get(port, None)] == [200, 401]
    found = scrape(int(line.group(1)))
    deadline = time.monotonic() + 30
    while latency_count(found, "decision") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        found = scrape(int(line.group(1)))
    assert (status(found, 200, "alex"), status(found, 401)) == (1, 1)
    assert process.terminate() == 0


def test_a_second_metrics_on_one_registry_is_refused() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Metrics(registry)
