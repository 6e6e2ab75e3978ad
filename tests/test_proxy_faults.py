"""Upstream faults through both real proxies: 502 and 504 answers, retries, aborted bodies, survival.

Every test ends by checking that the same proxy still answers a healthy route: a fault never takes a
worker down. Nothing here waits for a fixed time to pass; slow upstreams wait on events the test sets.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import proxy_servers
from consumer_auth import Gateway
from proxy_servers import Handler, UpstreamServer, refused_port, request, start_upstream
from support import Reply, basic

ALEX = ("Authorization", basic("alex", "123456"))
BAD_GATEWAY = b'{"error_msg":"502 Bad Gateway"}\n'
GATEWAY_TIMEOUT = b'{"error_msg":"504 Gateway Timeout"}\n'


@pytest.fixture(params=["asgi", "wsgi"], ids=lambda kind: f"{kind}-proxy")
def kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture(scope="module")
def echo() -> UpstreamServer:
    return start_upstream(name="faults-echo")


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of the test: upstreams that hang wait on it (never longer than 30 s)."""
    event = threading.Event()
    yield event
    event.set()


def serve(kind: str, upstream: Any, healthy: str, *, timeout: dict[str, float] | None = None) -> int:
    """A proxy with ``/x`` (and ``/x/*``) going to ``upstream`` and ``/ok`` to a healthy echo."""
    if timeout is not None:
        if isinstance(upstream, str):
            upstream = {"nodes": {upstream.removeprefix("http://"): 1}}
        upstream = {**upstream, "timeout": timeout}
    config = {
        "consumers": [
            {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}}
        ],
        "routes": [
            {"id": "faulty", "uris": ["/x", "/x/*"], "upstream": upstream, "plugins": {"basic-auth": {}}},
            {"id": "healthy", "uri": "/ok", "upstream": healthy},
        ],
    }
    gateway = Gateway.from_dict(config)
    if kind == "asgi":
        return proxy_servers.ASGIServer(gateway.asgi_proxy()).port
    return proxy_servers.WSGIServer(gateway.wsgi_proxy()).port


def assert_fault(reply: Any, status: int, body: bytes) -> None:
    assert reply.status == status, reply.body
    assert reply.body == body
    assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    assert reply.headers["content-length"] == str(len(body))


def assert_alive(port: int) -> None:
    assert request(port, "GET", "/ok").status == 200


def test_upstream_down_is_502(kind: str, echo: UpstreamServer, caplog: pytest.LogCaptureFixture) -> None:
    port = serve(kind, f"http://127.0.0.1:{refused_port()}", echo.url)
    with caplog.at_level(logging.WARNING, logger="consumer_auth.proxy"):
        assert_fault(request(port, "GET", "/x", [ALEX]), 502, BAD_GATEWAY)
    messages = [record.getMessage() for record in caplog.records if record.name == "consumer_auth.proxy"]
    assert messages, "the fault is logged"
    assert all("route faulty" in message for message in messages)
    assert not any("123456" in message or ALEX[1] in message for message in messages)
    assert_alive(port)


def test_upstream_slower_than_read_timeout_is_504(
    kind: str, echo: UpstreamServer, release: threading.Event
) -> None:
    def slow(handler: Handler) -> None:
        release.wait(30)
        handler.answer(200, b"{}")

    upstream = start_upstream(slow, "slow")
    port = serve(kind, upstream.url, echo.url, timeout={"read": 0.3})
    assert_fault(request(port, "GET", "/x", [ALEX]), 504, GATEWAY_TIMEOUT)
    assert_alive(port)


def test_read_timeout_holds_on_a_reused_upstream_connection(
    kind: str, echo: UpstreamServer, release: threading.Event
) -> None:
    """The second exchange on a kept-alive upstream connection gets its own read timeout, also when
    the first one's would have run out sooner (the ASGI client keeps one timer per connection)."""
    answered: list[int] = []

    def fast_then_hanging(handler: Handler) -> None:
        answered.append(1)
        if len(answered) > 1:
            release.wait(30)
        handler.answer(200, b"{}")

    upstream = start_upstream(fast_then_hanging, "fast-then-hanging")
    port = serve(kind, upstream.url, echo.url, timeout={"read": 0.3})
    assert request(port, "GET", "/x", [ALEX]).status == 200
    time.sleep(0.2)  # the second wait ends after the first one's deadline
    assert_fault(request(port, "GET", "/x", [ALEX]), 504, GATEWAY_TIMEOUT)
    assert len(answered) == 2
    assert_alive(port)


def test_upstream_that_never_accepts_is_a_connect_timeout(kind: str, echo: UpstreamServer) -> None:
    # A listener whose accept queue is full drops further SYNs: connecting hangs until it times out.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
    try:
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        port = serve(kind, {"nodes": {address: 1}}, echo.url, timeout={"connect": 0.3})
        assert_fault(request(port, "GET", "/x", [ALEX]), 504, GATEWAY_TIMEOUT)
        assert_alive(port)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_upstream_not_reading_the_body_is_a_send_timeout(
    kind: str, echo: UpstreamServer, release: threading.Event
) -> None:
    def deaf(handler: Handler) -> None:
        release.wait(30)  # never reads the body

    upstream = start_upstream(deaf, "deaf")
    port = serve(kind, upstream.url, echo.url, timeout={"send": 0.3})
    size = 256 * 1024 * 1024  # far more than every socket buffer on the way can hold
    reply = send_body_while_reading(port, "/x", proxy_servers.pattern(size), size)
    assert_fault(reply, 504, GATEWAY_TIMEOUT)
    assert_alive(port)


def send_body_while_reading(port: int, target: str, chunks: Iterator[bytes], size: int) -> Any:
    """POST a body from one thread while reading the response in this one (the proxy may answer early)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = f"POST {target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {ALEX[1]}\r\nContent-Length: {size}\r\n\r\n"

    def send() -> None:
        try:
            sock.sendall(head.encode())
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the proxy answered and closed: the rest of the body is not wanted

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    response = http.client.HTTPResponse(sock)
    try:
        response.begin()
        body = response.read()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return Reply(response.status, headers, body)
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # wakes the sender if it is blocked: close() would not
        sender.join(30)
        sock.close()


def test_upstream_reset_before_answering_is_502(kind: str, echo: UpstreamServer) -> None:
    def reset(handler: Handler) -> None:
        for _ in handler.body_chunks():
            pass
        handler.reset()

    port = serve(kind, start_upstream(reset, "reset").url, echo.url)
    assert_fault(request(port, "GET", "/x", [ALEX]), 502, BAD_GATEWAY)
    assert_alive(port)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_upstream_reset_mid_body_aborts_the_response(kind: str, echo: UpstreamServer, framing: str) -> None:
    def half(handler: Handler) -> None:
        handler.send_response(200)
        if framing == "chunked":
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            handler.wfile.write(b"1000\r\n" + b"x" * 4096 + b"\r\n")
        else:
            handler.send_header("Content-Length", "1000000")
            handler.end_headers()
            handler.wfile.write(b"x" * 4096)
        handler.reset()

    port = serve(kind, start_upstream(half, "half").url, echo.url)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/x", headers={"Authorization": ALEX[1]})
        response = connection.getresponse()
        assert response.status == 200  # the status line had gone out before the reset
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            response.read()  # the client can tell the body is incomplete: never a clean short body
    finally:
        connection.close()
    assert_alive(port)


def test_second_node_takes_over_when_the_first_refuses(kind: str, echo: UpstreamServer) -> None:
    upstream = {"nodes": {f"127.0.0.1:{refused_port()}": 1, echo.authority: 1}}
    port = serve(kind, upstream, echo.url)
    for _ in range(6):  # the refusing node is the first choice for half of them
        reply = request(port, "GET", "/x", [ALEX])
        assert reply.status == 200, reply.body
        assert json.loads(reply.body)["server"] == "faults-echo"


def test_nodes_share_requests_by_weight(kind: str) -> None:
    heavy = start_upstream(proxy_servers.echo, "heavy")
    light = start_upstream(proxy_servers.echo, "light")
    port = serve(kind, {"nodes": {heavy.authority: 3, light.authority: 1}}, heavy.url)
    served = Counter(json.loads(request(port, "GET", "/x", [ALEX]).body)["server"] for _ in range(20))
    assert served == {"heavy": 15, "light": 5}


def test_closed_keep_alive_connection_is_retried_for_idempotent_requests(
    kind: str, echo: UpstreamServer
) -> None:
    # The upstream answers the first request of each connection and drops any later one unanswered,
    # as an upstream closing an idle keep-alive connection just as a request arrives does.
    posts: list[bytes] = []

    def once_per_connection(handler: Handler) -> None:
        body = b"".join(handler.body_chunks())
        if handler.command == "POST":
            posts.append(body)
        if getattr(handler, "answered", False):
            handler.reset()
            return
        handler.answered = True  # type: ignore[attr-defined]
        handler.answer(200, json.dumps({"method": handler.command}).encode())

    upstream = start_upstream(once_per_connection, "once")
    port = serve(kind, upstream.url, echo.url)
    for _ in range(4):
        assert request(port, "GET", "/x", [ALEX]).status == 200
    # A POST is never replayed (the upstream may have acted on it). Sent on the pooled connection the
    # upstream drops, its failure is reported as a 502; if the pool had judged that connection unusable
    # first, it went out once on a fresh connection instead. Either way the upstream saw it once.
    reply = request(port, "POST", "/x", [ALEX], body=b"data")
    assert posts == [b"data"]
    if reply.status != 200:
        assert_fault(reply, 502, BAD_GATEWAY)
    assert_alive(port)


def test_client_leaving_mid_download_releases_the_upstream(
    kind: str, echo: UpstreamServer, release: threading.Event
) -> None:
    stopped = threading.Event()

    def endless(handler: Handler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        chunk = b"x" * 65536
        try:
            for _ in range(1_000_000):  # bounded: about 64 GiB, never reached
                handler.wfile.write(b"10000\r\n" + chunk + b"\r\n")
                if release.is_set():
                    break
        except OSError:
            stopped.set()  # the proxy dropped the upstream connection

    port = serve(kind, start_upstream(endless, "endless").url, echo.url)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET /x HTTP/1.1\r\nHost: localhost\r\nAuthorization: {ALEX[1]}\r\n\r\n".encode())
        received = b""
        while len(received) < 1_000_000:
            data = sock.recv(65536)
            assert data, "the proxy closed the connection early"
            received += data
        assert received.startswith(b"HTTP/1.1 200 ")
    assert stopped.wait(30), "the upstream kept sending to a client that had left"
    assert_alive(port)
