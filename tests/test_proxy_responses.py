"""Upstream answers of every shape, and connections that end early, through both real proxies.

The upstreams here write their answers byte for byte where the shape matters (interim responses, no
length, HTTP/1.0, garbage). Each test also checks that the client connection or the proxy is still
usable afterwards, so a response the proxy framed wrongly shows up as a failure, not as a hang.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
from typing import Any

import pytest

import proxy_servers
from consumer_auth import Gateway
from proxy_servers import Handler, UpstreamServer, request, start_upstream
from support import basic
from test_proxy_faults import send_body_while_reading

ALEX = ("Authorization", basic("alex", "123456"))
AUTH = {"Authorization": ALEX[1]}
BAD_GATEWAY = b'{"error_msg":"502 Bad Gateway"}\n'


@pytest.fixture(params=["asgi", "wsgi"], ids=lambda kind: f"{kind}-proxy")
def kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


def serve(kind: str, upstream: str, consumer: dict[str, Any] | None = None) -> int:
    """A proxy forwarding every path to ``upstream``, for alex (``consumer`` adds to his entry)."""
    config = {
        "consumers": [
            {
                "username": "alex",
                "plugins": {"basic-auth": {"username": "alex", "password": "123456"}},
                **(consumer or {}),
            }
        ],
        "routes": [{"id": "all", "uri": "/*", "upstream": upstream, "plugins": {"basic-auth": {}}}],
    }
    gateway = Gateway.from_dict(config)
    if kind == "asgi":
        return proxy_servers.ASGIServer(gateway.asgi_proxy()).port
    return proxy_servers.WSGIServer(gateway.wsgi_proxy()).port


def on_one_connection(kind: str, port: int, requests: list[tuple[str, str]]) -> list[tuple[int, bytes]]:
    """Send ``(method, target)`` requests one after the other on one client connection.

    uvicorn keeps the connection open after a well-framed answer (and closes it after an app error), so
    for the ASGI proxy the connection must survive every answer. werkzeug's development server closes it
    after an answer streamed without a length, so there a closed connection is simply reopened.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    answers = []
    try:
        for method, target in requests:
            connection.request(method, target, headers=AUTH)
            response = connection.getresponse()
            answers.append((response.status, response.read()))
            if kind == "asgi":
                assert not response.will_close, "the proxy closed the client connection"
    finally:
        connection.close()
    return answers


def raw(answer: bytes, *, close: bool = False) -> Any:
    """An upstream behaviour that reads the request body and writes ``answer`` as it is."""

    def behaviour(handler: Handler) -> None:
        for _ in handler.body_chunks():
            pass
        handler.wfile.write(answer)
        if close:
            handler.close_connection = True

    return behaviour


def test_interim_responses_are_not_passed_on() -> None:
    # ASGI proxy only: the WSGI proxy's http.client skips 100 Continue but takes a 103 for the answer.
    kind = "asgi"
    answer = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Final: 1\r\n\r\nok"
    )
    port = serve(kind, start_upstream(raw(answer), "interim").url)
    assert on_one_connection(kind, port, [("GET", "/a"), ("GET", "/b")]) == [(200, b"ok"), (200, b"ok")]
    assert request(port, "GET", "/a", [ALEX]).headers["x-final"] == "1"


@pytest.mark.parametrize("status", [204, 304])
def test_answers_without_a_body(kind: str, status: int) -> None:
    # A 304 may carry the Content-Length of the full representation: no body follows all the same.
    length = b"Content-Length: 1234\r\n" if status == 304 else b""
    answer = b'HTTP/1.1 %d Nothing\r\nETag: "v1"\r\n%b\r\n' % (status, length)
    port = serve(kind, start_upstream(raw(answer), f"status-{status}").url)
    assert on_one_connection(kind, port, [("GET", "/a"), ("GET", "/b")]) == [(status, b""), (status, b"")]
    assert request(port, "GET", "/a", [ALEX]).headers["etag"] == '"v1"'


def test_body_without_length_is_read_to_the_connection_end(kind: str) -> None:
    body = b"x" * 300_000  # more than one read
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body
    port = serve(kind, start_upstream(raw(answer, close=True), "until-close").url)
    assert on_one_connection(kind, port, [("GET", "/a"), ("GET", "/b")]) == [(200, body), (200, body)]


def test_connection_close_from_the_upstream_is_honoured(kind: str) -> None:
    # Every answer says Connection: close and the upstream closes: reusing such a connection would
    # fail a POST (never replayed), so three POSTs in a row pass only if none is reused.
    ports: list[int] = []

    def closing(handler: Handler) -> None:
        ports.append(handler.client_address[1])
        body = b"".join(handler.body_chunks())
        handler.answer(200, body, [("Connection", "close")])
        handler.close_connection = True

    port = serve(kind, start_upstream(closing, "closing").url)
    for number in range(3):
        reply = request(port, "POST", "/a", [ALEX], body=b"payload %d" % number)
        assert (reply.status, reply.body) == (200, b"payload %d" % number)
    assert len(set(ports)) == 3


def test_http10_upstream(kind: str) -> None:
    class Http10(Handler):
        protocol_version = "HTTP/1.0"

    upstream = UpstreamServer(raw(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello", close=True), "http10")
    upstream.RequestHandlerClass = Http10
    threading.Thread(target=upstream.serve_forever, args=(0.05,), daemon=True).start()
    proxy_servers._running.append(upstream.stop)
    port = serve(kind, upstream.url)
    for _ in range(3):
        reply = request(port, "POST", "/a", [ALEX], body=b"data")
        assert (reply.status, reply.body) == (200, b"hello")


def test_head_then_get_on_one_upstream_connection(kind: str) -> None:
    ports: list[int] = []

    def answer(handler: Handler) -> None:
        ports.append(handler.client_address[1])
        handler.answer(200, json.dumps({"method": handler.command}).encode())

    port = serve(kind, start_upstream(answer, "head-get").url)
    replies = on_one_connection(kind, port, [("HEAD", "/a"), ("GET", "/a"), ("HEAD", "/a"), ("GET", "/a")])
    assert replies == [(200, b""), (200, b'{"method": "GET"}')] * 2
    if kind == "asgi":  # the WSGI proxy's pool may hold the connection in another thread's hands
        assert len(set(ports)) == 1, "the upstream connection is reused after a HEAD"


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"NOT HTTP AT ALL\r\n\r\n", id="garbage"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", id="head-too-large"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", id="field-too-long"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(129)) + b"\r\n",
            id="too-many-headers",
        ),
        pytest.param(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" * 5000, id="endless-interim"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", id="two-lengths"
        ),
        pytest.param(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n", id="upgrade"
        ),
    ],
)
def test_answers_that_are_not_http_are_502(answer: bytes, caplog: pytest.LogCaptureFixture) -> None:
    # The WSGI proxy's http.client reads a 101 as a final answer and leaves its framing to the caller.
    port = serve("asgi", start_upstream(raw(answer, close=True), "not-http").url)
    with caplog.at_level(logging.WARNING, logger="consumer_auth.proxy"):
        reply = request(port, "GET", "/a", [ALEX])
    assert (reply.status, reply.body) == (502, BAD_GATEWAY)
    assert any("upstream failed" in record.getMessage() for record in caplog.records)


def test_largest_head_allowed_passes() -> None:
    fields = [(b"X-%d" % i, b"v") for i in range(126)] + [(b"X-Big", b"a" * 8000)]
    answer = b"HTTP/1.1 200 OK\r\n" + b"".join(b"%s: %s\r\n" % field for field in fields)
    port = serve("asgi", start_upstream(raw(answer + b"Content-Length: 2\r\n\r\nok"), "big-head").url)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:  # http.client stops at 100
        sock.sendall(
            f"GET /a HTTP/1.1\r\nHost: x\r\nAuthorization: {ALEX[1]}\r\nConnection: close\r\n\r\n".encode()
        )
        received = b""
        while data := sock.recv(65536):
            received += data
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert head.count(b"\r\nx-") == 127
    assert b"\r\nx-big: " + b"a" * 8000 + b"\r\n" in head
    assert body == b"ok"


def test_early_answer_stops_the_upload() -> None:
    # The upstream refuses the body without reading it; the proxy must pass the answer on rather than
    # keep pushing the body (the WSGI proxy sends the whole body before it reads any answer). The
    # upstream then holds the connection open: closing a socket with unread bytes resets it, which may
    # destroy the answer before the proxy reads it (the reason servers "linger" on close).
    release = threading.Event()

    def refuse(handler: Handler) -> None:
        handler.answer(413, b'{"error": "too large"}', [("Connection", "close")])
        release.wait(30)
        handler.close_connection = True

    port = serve("asgi", start_upstream(refuse, "refuse").url)
    size = 64 * 1024 * 1024
    try:
        reply = send_body_while_reading(port, "/a", proxy_servers.pattern(size), size)
        assert (reply.status, reply.body) == (413, b'{"error": "too large"}')
        assert request(port, "GET", "/a", [ALEX]).status == 413  # the proxy is still there
    finally:
        release.set()


def test_client_leaving_mid_upload_drops_the_upstream_request(kind: str) -> None:
    cut = threading.Event()

    def sink(handler: Handler) -> None:
        try:
            for _ in handler.body_chunks():
                pass
        except ConnectionError:
            cut.set()  # the proxy dropped the upstream connection: the body ends early
            handler.close_connection = True
            return
        handler.answer(200, b"{}")

    port = serve(kind, start_upstream(sink, "sink").url)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            f"POST /a HTTP/1.1\r\nHost: localhost\r\nAuthorization: {ALEX[1]}\r\n"
            f"Content-Length: 10000000\r\n\r\n".encode()
            + b"x" * 100_000
        )
    assert cut.wait(30), "the upstream kept waiting for a body whose client had left"
    assert request(port, "POST", "/a", [ALEX], body=b"whole").status == 200


def test_configured_value_with_a_line_break_never_reaches_the_upstream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    upstream = start_upstream(name="injection")
    consumer = {"labels": {"custom_id": "c1\r\nX-Injected: yes"}}
    port = serve("asgi", upstream.url, consumer)
    with caplog.at_level(logging.WARNING, logger="consumer_auth.proxy"):
        reply = request(port, "GET", "/a", [ALEX])
    assert (reply.status, reply.body) == (502, BAD_GATEWAY)
    assert upstream.count == 0
    messages = [record.getMessage() for record in caplog.records if record.name == "consumer_auth.proxy"]
    assert messages == [
        f"invalid header value for the upstream (upstream {upstream.authority}, route all, ValueError)"
    ]


def test_access_log_names_the_route_of_a_rejection(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    upstream = start_upstream(raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), "access-log")
    port = serve(kind, upstream.url)
    with caplog.at_level(logging.INFO, logger="consumer_auth.access"):
        assert request(port, "GET", "/a", [("Authorization", basic("alex", "wrong"))]).status == 401
        assert request(port, "GET", "/a", [ALEX]).status == 200
        lines = _access_lines(caplog, 2)
    assert len(lines) == 2, lines
    assert lines[0].startswith('127.0.0.1 "GET /a" 401 '), lines[0]
    assert lines[0].endswith(" route=all consumer=- upstream=-"), lines[0]
    assert " route=all consumer=alex upstream=127.0.0.1:" in lines[1], lines[1]


def _access_lines(caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    """The access-log lines so far, waiting (up to 10 s) until there are ``count``: the WSGI proxy
    writes a forwarded request's line when the server closes its response, after the client has it."""
    deadline = time.monotonic() + 10
    while True:
        lines = [record.getMessage() for record in caplog.records if record.name == "consumer_auth.access"]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)
