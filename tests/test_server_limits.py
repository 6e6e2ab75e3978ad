"""Hardening of ``consumer-auth serve`` over real sockets: size limits, request smuggling, slow clients,
faulty upstream responses, and no leaked descriptors.

The server under test is the real command, as a subprocess, in front of real upstreams on loopback, with
short timeouts so that slow-client tests finish quickly. No test depends on how long anything takes: a
timeout test waits (boundedly) for the server to act, and checks what it did.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from consumer_auth import BasicAuthPlugin, Consumer, Gateway, Route
from proxy_servers import (
    CONSUMER_AUTH,
    Behaviour,
    Handler,
    Process,
    UpstreamServer,
    WSGIServer,
    download_source,
    echo,
    request,
    start_upstream,
)
from support import basic

LIMITS = {
    "max_url_bytes": 2048,
    "max_header_bytes": 8192,
    "max_headers": 40,
    "header_timeout": 1,
    "body_timeout": 1,
    "send_timeout": 1,
    "keep_alive_timeout": 1,
}
WAIT = 30.0
"""Longest a test waits for the server to answer or close (far above every configured timeout)."""


def _raw(answer: bytes) -> Behaviour:
    """An upstream that writes ``answer`` as it is, then closes the connection."""

    def behave(handler: Handler) -> None:
        for _ in handler.body_chunks():
            pass
        handler.wfile.write(answer)
        handler.wfile.flush()
        handler.close_connection = True

    return behave


# Upstream answers a proxy must not pass on: each must become the proxy's 502.
FAULTY_UPSTREAMS = {
    "not-http": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "bad-status-code": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    "no-status-line": b"Content-Length: 2\r\n\r\nhi",
    "bad-length": b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\nhi",
    "negative-length": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhi",
    "two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi!",
    "length-and-chunked": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "header-too-long": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 100_000 + b"\r\nContent-Length: 0\r\n\r\n",
    "too-many-headers": b"HTTP/1.1 200 OK\r\n"
    + b"".join(b"X-%d: a\r\n" % i for i in range(1000))
    + b"Content-Length: 0\r\n\r\n",
    "bad-header-line": b"HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 0\r\n\r\n",
    "nul-in-header": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "closed-before-head": b"",
}


@dataclass
class Server:
    port: int
    pid: int

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


@pytest.fixture(scope="module")
def upstreams() -> dict[str, UpstreamServer]:
    servers = {"echo": start_upstream(echo, "echo"), "download": start_upstream(download_source, "download")}
    servers.update({name: start_upstream(_raw(answer), name) for name, answer in FAULTY_UPSTREAMS.items()})
    return servers


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, upstreams: dict[str, UpstreamServer]
) -> Iterator[Server]:
    routes = [
        {"uri": f"/upstream/{name}", "upstream": upstream.url, "plugins": {"basic-auth": {}}}
        for name, upstream in upstreams.items()
        if name not in ("echo", "download")
    ]
    routes.append({"uri": "/big", "upstream": upstreams["download"].url, "plugins": {"basic-auth": {}}})
    routes.append({"uri": "/*", "upstream": upstreams["echo"].url, "plugins": {"basic-auth": {}}})
    config = tmp_path_factory.mktemp("serve") / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": LIMITS,
                "consumers": [
                    {
                        "username": "alex",
                        "plugins": {"basic-auth": {"username": "alex", "password": "123456"}},
                    }
                ],
                "routes": routes,
            }
        )
    )
    process = Process([CONSUMER_AUTH, "serve", "--config", str(config), "--port", "0", "--no-access-log"])
    try:
        yield Server(process.uvicorn_port(), process.proc.pid)
    finally:
        assert process.terminate() == 0


AUTH = f"Authorization: {basic('alex', '123456')}\r\n".encode()


def exchange(port: int, data: bytes, *, then: bytes = b"", pause: float = 0.0, read: bool = True) -> bytes:
    """Send ``data`` (and ``then`` after ``pause`` s) on a new connection; return all it answered until
    the server closed it (a reset after an answer counts as closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as connection:
        try:
            connection.sendall(data)
            if then:
                time.sleep(pause)
                connection.sendall(then)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused before reading everything; its answer may still be waiting
        received = b""
        while read:
            try:
                chunk = connection.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return received


def status_and_body(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def refusal(status: int, phrase: str) -> tuple[int, bytes]:
    return status, json.dumps({"error_msg": f"{status} {phrase}"}, separators=(",", ":")).encode() + b"\n"


def get(path: str = "/", headers: bytes = b"", *, close: bool = True) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + AUTH + headers + connection + b"\r\n"


# --- sizes ------------------------------------------------------------------------------------------


def seen(answer: bytes) -> dict[str, object]:
    """What the echo upstream saw, from a 200 answer."""
    status, body = status_and_body(answer)
    assert status == 200, answer[:200]
    document: dict[str, object] = json.loads(body)
    return document


def test_a_plain_request_passes(server: Server) -> None:
    assert seen(exchange(server.port, get()))["consumer"] == "alex"


def test_the_gateway_still_answers_first(server: Server) -> None:
    answer = exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_and_body(answer) == (401, b'{"message":"Missing authorization in request"}\n')


def test_header_count_limit(server: Server) -> None:
    # Host, Authorization and Connection are three of the forty.
    allowed = b"".join(b"X-%d: a\r\n" % i for i in range(37))
    assert seen(exchange(server.port, get(headers=allowed)))["consumer"] == "alex"
    over = b"".join(b"X-%d: a\r\n" % i for i in range(38))
    assert status_and_body(exchange(server.port, get(headers=over))) == refusal(
        431, "Request Header Fields Too Large"
    )


@pytest.mark.parametrize(
    "size", [pytest.param(9_000, id="just-over"), pytest.param(4_000_000, id="4MB-streamed")]
)
def test_header_size_limit(server: Server, size: int) -> None:
    answer = exchange(server.port, get(headers=b"X-Big: " + b"a" * size + b"\r\n"))
    assert status_and_body(answer) == refusal(431, "Request Header Fields Too Large")


def test_request_target_limit(server: Server) -> None:
    assert seen(exchange(server.port, get("/" + "a" * 2000)))["path"] == "/" + "a" * 2000
    answer = exchange(server.port, get("/" + "a" * 2100))
    assert status_and_body(answer) == refusal(414, "Request-URI Too Long")


# --- request smuggling --------------------------------------------------------------------------------

_SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        pytest.param(
            b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            refusal(400, "Bad Request"),
            id="cl-then-te",
        ),
        pytest.param(
            b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
            refusal(400, "Bad Request"),
            id="te-then-cl",
        ),
        pytest.param(
            b"Content-Length: 4\r\nContent-Length: 41\r\n", refusal(400, "Bad Request"), id="two-lengths"
        ),
        pytest.param(b"Content-Length: 4, 41\r\n", refusal(400, "Bad Request"), id="length-list"),
        pytest.param(b"Content-Length: +4\r\n", refusal(400, "Bad Request"), id="signed-length"),
        pytest.param(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", None, id="te-twice"),
        pytest.param(
            b"Transfer-Encoding: gzip, chunked\r\n", refusal(501, "Not Implemented"), id="te-gzip-chunked"
        ),
        pytest.param(b"Transfer-Encoding: chunked, identity\r\n", None, id="te-chunked-not-last"),
        pytest.param(b"Transfer-Encoding: xchunked\r\n", None, id="te-unknown"),
        pytest.param(
            b"Transfer-Encoding : chunked\r\n", refusal(400, "Bad Request"), id="space-before-colon"
        ),
        pytest.param(
            b"Transfer-Encoding:\tchunked\r\nX: y\r\n\tz\r\n", refusal(400, "Bad Request"), id="obs-fold"
        ),
    ],
)
def test_ambiguous_framing_is_refused_and_nothing_is_smuggled(
    server: Server, head: bytes, expected: tuple[int, bytes] | None
) -> None:
    request = b"POST / HTTP/1.1\r\nHost: x\r\n" + AUTH + head + b"\r\n0\r\n\r\n" + _SMUGGLED
    answer = exchange(server.port, request)
    assert answer.count(b"HTTP/1.1 ") == 1, answer  # one refusal; the smuggled request never ran
    status, body = status_and_body(answer)
    if expected is None:  # refused either by the parser (400) or as an unsupported coding (501)
        assert status in (400, 501), answer
        assert body in (refusal(400, "Bad Request")[1], refusal(501, "Not Implemented")[1])
    else:
        assert (status, body) == expected


def test_expect_100_continue_is_answered_before_the_body_is_sent(server: Server) -> None:
    head = (
        b"POST / HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Length: 5\r\nExpect: 100-continue\r\n"
        b"Connection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as connection:
        connection.sendall(head)
        interim = b""
        while b"\r\n\r\n" not in interim:  # the client waits for this before sending its body
            chunk = connection.recv(1)
            assert chunk, interim
            interim += chunk
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        connection.sendall(b"hello")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    assert seen(answer)["body"] == "hello"


def test_a_well_framed_chunked_body_passes(server: Server) -> None:
    request = (
        b"POST / HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    assert seen(exchange(server.port, request))["body"] == "abcde"


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    answer = exchange(server.port, get("/one", close=False) + get("/two"))
    assert answer.count(b"HTTP/1.1 200 ") == 2


# --- slow clients ------------------------------------------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    assert exchange(server.port, b"") == b""  # closed by the server (the test would time out otherwise)


def test_a_slow_request_head_gets_408(server: Server) -> None:
    answer = exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert status_and_body(answer) == refusal(408, "Request Timeout")


def test_a_stalled_body_gets_408(server: Server) -> None:
    head = b"POST / HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Length: 100\r\n\r\n"
    answer = exchange(server.port, head + b"only part of it")
    assert status_and_body(answer) == refusal(408, "Request Timeout")


def test_an_idle_kept_alive_connection_is_closed(server: Server) -> None:
    answer = exchange(server.port, get(close=False))
    assert answer.count(b"HTTP/1.1 200 ") == 1  # answered, then closed when idle


def test_a_client_that_stops_reading_is_dropped(server: Server) -> None:
    baseline = server.fds()
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as connection:
        connection.sendall(get(f"/big?size={64 * 1024 * 1024}"))  # and read nothing
        deadline = time.monotonic() + WAIT
        while server.fds() <= baseline and time.monotonic() < deadline:  # accepted, answering
            time.sleep(0.02)
        while server.fds() > baseline and time.monotonic() < deadline:  # dropped
            time.sleep(0.05)
        assert server.fds() <= baseline
        received = 0
        try:
            while chunk := connection.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert received < 64 * 1024 * 1024  # what the kernel held; the rest was never sent


# --- faulty upstreams --------------------------------------------------------------------------------

BAD_GATEWAY = (502, b'{"error_msg":"502 Bad Gateway"}\n')


@pytest.mark.parametrize("name", sorted(FAULTY_UPSTREAMS))
def test_a_malformed_or_oversized_upstream_answer_is_a_502(server: Server, name: str) -> None:
    assert status_and_body(exchange(server.port, get(f"/upstream/{name}"))) == BAD_GATEWAY


@pytest.mark.parametrize("name", sorted(FAULTY_UPSTREAMS))
def test_the_wsgi_proxy_answers_502_too(upstreams: dict[str, UpstreamServer], name: str) -> None:
    gateway = Gateway(
        consumers=[Consumer("alex", password="123456")],
        routes=[Route("/*", upstream=upstreams[name].url, plugins=[BasicAuthPlugin()])],
    )
    proxy = WSGIServer(gateway.wsgi_proxy())
    try:
        reply = request(proxy.port, "GET", "/", [("Authorization", basic("alex", "123456"))])
        assert (reply.status, reply.body) == BAD_GATEWAY
    finally:
        proxy.stop()


# --- no leaks -------------------------------------------------------------------------------------


def _faults(port: int, count: int) -> None:
    kinds = [
        get(headers=b"".join(b"X-%d: a\r\n" % i for i in range(60))),  # 431, count
        get(headers=b"X-Big: " + b"a" * 20_000 + b"\r\n"),  # 431, size
        get("/" + "a" * 3000),  # 414
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",  # 400
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",  # 501
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello: 400
        b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic !!\r\nConnection: close\r\n\r\n",  # 401
        *(get(f"/upstream/{name}") for name in sorted(FAULTY_UPSTREAMS)),  # 502
    ]
    for index in range(count):
        kind = kinds[index % (len(kinds) + 1)] if index % (len(kinds) + 1) < len(kinds) else None
        if kind is None:  # a client that connects, sends half a head and leaves
            with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as connection:
                connection.sendall(b"GET / HTTP/1.1\r\nHo")
            continue
        answer = exchange(port, kind)
        assert answer.startswith(b"HTTP/1.1 4") or answer.startswith(b"HTTP/1.1 5"), answer[:80]


def test_thousands_of_faulty_requests_leak_no_descriptors(server: Server) -> None:
    _faults(server.port, 50)  # warm up: whatever the server opens once is open before the baseline
    baseline = server.fds()
    _faults(server.port, 5_000)
    deadline = time.monotonic() + WAIT  # from the end of the soak: the last refusals may still linger
    while server.fds() > baseline and time.monotonic() < deadline:  # lingering closes finish
        time.sleep(0.1)
    assert server.fds() <= baseline
    assert seen(exchange(server.port, get()))["consumer"] == "alex"  # and it still serves


# --- configuration ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "message"),
    [
        pytest.param({"max_headers": 0}, "server.max_headers: expected an integer >= 1, got 0", id="count"),
        pytest.param(
            {"header_timeout": "10s"}, "server.header_timeout: expected a number, got '10s'", id="timeout"
        ),
        pytest.param(
            {"max_header_bytes": 10},
            "server.max_header_bytes: expected an integer >= 1024, got 10",
            id="small",
        ),
        pytest.param(
            {"read_timeout": 5},
            "server.read_timeout: unknown key (expected one of: body_timeout, first_byte_timeout, header_timeout, keep_alive_timeout, max_body_bytes, max_connections, max_connections_per_client, max_header_bytes, max_headers, max_url_bytes, send_timeout, ssl_certfile, ssl_keyfile)",
            id="unknown",
        ),
        pytest.param(
            {"max_connections": 10, "max_connections_per_client": 11},
            "server.max_connections_per_client: expected an integer <= 10, got 11",
            id="per-client-over-total",
        ),
        pytest.param(
            {"header_timeout": 3, "first_byte_timeout": 4},
            "server.first_byte_timeout: expected at most header_timeout (3), got 4",
            id="first-byte-after-head",
        ),
        pytest.param(
            {"max_body_bytes": -1},
            "server.max_body_bytes: expected an integer >= 0, got -1",
            id="body-negative",
        ),
        pytest.param([1], "server: expected a mapping, got [1]", id="not-a-mapping"),
    ],
)
def test_server_section_errors_name_the_place(section: object, message: str) -> None:
    from consumer_auth import ConfigError

    with pytest.raises(ConfigError) as caught:
        Gateway.from_dict({"server": section})
    assert str(caught.value) == message


def test_serve_takes_its_limits_from_the_config_or_a_file_store(tmp_path: Path) -> None:
    from consumer_auth import cli
    from consumer_auth._limits import ServerLimits

    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"server": {"max_headers": 7}}))
    assert cli._limits(str(path), None).max_headers == 7
    assert cli._limits(None, str(path)).max_headers == 7
    assert cli._limits(str(path), "sqlite:///consumers.db").max_headers == 7
    assert cli._limits(None, "sqlite:///consumers.db") == ServerLimits()


def test_server_defaults_follow_max_connections_and_the_header_timeout() -> None:
    from consumer_auth._limits import ServerLimits

    default = ServerLimits()
    assert (default.max_connections_per_client, default.first_byte_timeout, default.max_body_bytes) == (
        100,
        5.0,
        None,
    )
    small = ServerLimits(max_connections=25, header_timeout=2)
    assert (small.max_connections_per_client, small.first_byte_timeout) == (2, 2.0)
    assert ServerLimits(max_connections=5).max_connections_per_client == 1
