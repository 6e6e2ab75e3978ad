"""Server hardening over real sockets: size limits, request smuggling, slow clients, no leaked descriptors.

The server under test is a separate process serving a gateway with the same uvicorn options as
``consumer-auth serve`` (``consumer_auth._server.uvicorn_options``), with short timeouts so that slow-client
tests finish quickly. No test depends on how long anything takes: a timeout test waits (boundedly) for the
server to act, and checks what it did.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

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

_SERVER = textwrap.dedent(
    """
    import json, socket, sys

    import uvicorn

    from consumer_auth._server import uvicorn_options
    from consumer_auth.config import load_file, parse_config
    from consumer_auth.gateway import Gateway

    config = parse_config(load_file(sys.argv[1]))
    gateway = Gateway.from_config(config)
    chunk = 1024 * 1024

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            received += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        if scope["path"] == "/big":  # 64 MiB, streamed: far more than the kernel's socket buffers
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(64 * chunk).encode())]})
            for _ in range(64):
                await send({"type": "http.response.body", "body": b"x" * chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        body = json.dumps({"received": received}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)  # connections wait in the backlog until uvicorn accepts them
    print(sock.getsockname()[1], flush=True)
    options = uvicorn_options(config.server)
    uvicorn.Server(uvicorn.Config(gateway.asgi(app), log_level="warning", lifespan="off", **options)).run(
        sockets=[sock]
    )
    """
)


@dataclass
class Server:
    port: int
    pid: int

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder: Path = tmp_path_factory.mktemp("limits")
    config = folder / "gateway.json"
    config.write_text(
        json.dumps(
            {
                "server": LIMITS,
                "consumers": [
                    {
                        "username": "alex",
                        "plugins": {"basic-auth": {"username": "alex", "password": "123456"}},
                    }
                ],
                "routes": [{"uri": "/*", "plugins": {"basic-auth": {}}}],
            }
        )
    )
    script = folder / "serve.py"
    script.write_text(_SERVER)
    process = subprocess.Popen(
        [sys.executable, str(script), str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield Server(int(process.stdout.readline()), process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


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


def test_a_plain_request_passes(server: Server) -> None:
    assert status_and_body(exchange(server.port, get())) == (200, b'{"received": 0}')


def test_the_gateway_still_answers_first(server: Server) -> None:
    answer = exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_and_body(answer) == (401, b'{"message":"Missing authorization in request"}\n')


def test_header_count_limit(server: Server) -> None:
    # Host, Authorization and Connection are three of the forty.
    allowed = b"".join(b"X-%d: a\r\n" % i for i in range(37))
    assert status_and_body(exchange(server.port, get(headers=allowed)))[0] == 200
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
    assert status_and_body(exchange(server.port, get("/" + "a" * 2000)))[0] == 200
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


def test_a_well_framed_chunked_body_passes(server: Server) -> None:
    request = (
        b"POST / HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    assert status_and_body(exchange(server.port, request)) == (200, b'{"received": 5}')


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
        connection.sendall(get("/big"))  # and read nothing
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
    deadline = time.monotonic() + WAIT
    baseline = server.fds()
    _faults(server.port, 5_000)
    while server.fds() > baseline and time.monotonic() < deadline:  # lingering closes finish
        time.sleep(0.1)
    assert server.fds() <= baseline
    assert status_and_body(exchange(server.port, get()))[0] == 200  # and it still serves
