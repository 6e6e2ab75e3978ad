"""``consumer-auth serve`` under abuse, over real sockets: one client must not take logins or
connections away from the others.

Each scenario is bounded in time and in count, and asserts what the server did (the flood got 503s,
the real user was answered 200), never how long it took; the timings are measured by
``benchmarks/abuse.py`` and written in ``docs/security.md``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import secrets
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import argon2
import pytest
import yaml

from proxy_servers import CONSUMER_AUTH, Handler, Process, UpstreamServer, WSGIServer, echo, start_upstream
from support import basic

WAIT = 60.0
"""Longest any step waits (far above what each should take, even on a loaded machine)."""

FLOOD_ADDRESS = "127.0.0.2"
"""The flooding client's address (all of 127.0.0.0/8 is loopback on Linux); the others use 127.0.0.1."""

BUSY = b'{"error_msg":"503 Service Unavailable"}\n'
ARGON2_HASH = argon2.PasswordHasher().hash("wonderland")  # the library's default parameters


def _serve(tmp_path: Path, document: dict[str, Any]) -> Iterator[int]:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(document))
    process = Process([CONSUMER_AUTH, "serve", "--config", str(config), "--port", "0", "--no-access-log"])
    try:
        yield process.uvicorn_port()
    finally:
        assert process.terminate() == 0


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    server = start_upstream(echo, "echo")
    yield server
    server.stop()


def _get(port: int, authorization: str, *, source: str = "127.0.0.1") -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT, source_address=(source, 0))
    try:
        connection.request("GET", "/json", headers={"Authorization": authorization, "Connection": "close"})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


# --- login starvation -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def argon2_gateway(tmp_path_factory: pytest.TempPathFactory, upstream: UpstreamServer) -> Iterator[int]:
    document = {
        "consumers": [
            {
                "username": "alice",
                "plugins": {"basic-auth": {"username": "alice", "password_hash": ARGON2_HASH}},
            }
        ],
        "routes": [{"uri": "/*", "upstream": upstream.url, "plugins": {"basic-auth": {}}}],
    }
    yield from _serve(tmp_path_factory.mktemp("argon2"), document)


def test_a_flood_of_made_up_usernames_gets_503s_and_the_real_user_still_logs_in(argon2_gateway: int) -> None:
    port = argon2_gateway
    statuses: Counter[int] = Counter()
    refusals: list[tuple[dict[str, str], bytes]] = []
    lock = threading.Lock()
    first_refusal = threading.Event()
    stop = threading.Event()

    def flood() -> None:
        for _ in range(40):  # bounded in count: 30 threads x 40 requests at most
            if stop.is_set():
                return
            try:
                status, headers, body = _get(
                    port, basic(f"ghost{secrets.token_hex(6)}", "x"), source=FLOOD_ADDRESS
                )
            except OSError:
                continue
            with lock:
                statuses[status] += 1
                if status == 503:
                    refusals.append((headers, body))
                    first_refusal.set()

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(30)]
    for thread in threads:
        thread.start()
    try:
        assert first_refusal.wait(WAIT), f"the flood was never refused: {statuses}"
        status, _, body = _get(port, basic("alice", "wonderland"))  # uncached: a real argon2 verification
        assert status == 200, body
        assert json.loads(body)["consumer"] == "alice"
    finally:
        stop.set()
        for thread in threads:
            thread.join(WAIT)
    headers, body = refusals[0]
    assert body == BUSY
    assert headers["retry-after"] == "1"
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert statuses[401] > 0  # the flood's admitted attempts were verified and answered as usual
    assert set(statuses) <= {401, 503}


# --- connection flood -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory, upstream: UpstreamServer) -> Iterator[int]:
    document = {
        # max_connections_per_client defaults to a tenth: 4
        "server": {"max_connections": 40, "header_timeout": 60, "first_byte_timeout": 2},
        "consumers": [
            {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}}
        ],
        "routes": [{"uri": "/*", "upstream": upstream.url, "plugins": {"basic-auth": {}}}],
    }
    yield from _serve(tmp_path_factory.mktemp("connections"), document)


def _read_all(connection: socket.socket) -> bytes:
    received = b""
    while True:
        try:
            chunk = connection.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def test_one_client_holding_connections_leaves_room_for_the_others(small_server: int) -> None:
    port = small_server
    held: list[socket.socket] = []
    try:
        for _ in range(50):  # more than max_connections, all idle, from one address
            connection = socket.create_connection(
                ("127.0.0.1", port), timeout=WAIT, source_address=(FLOOD_ADDRESS, 0)
            )
            held.append(connection)
        status, _, body = _get(port, basic("alex", "123456"))
        assert status == 200, body
        answers = [_read_all(connection) for connection in held[4:]]
        refused = [answer for answer in answers if answer.startswith(b"HTTP/1.1 503 ")]
        assert len(refused) == len(answers), answers[:3]
        assert refused[0].endswith(BUSY)
    finally:
        for connection in held:
            connection.close()


def test_a_silent_connection_is_closed_at_the_first_byte_timeout(small_server: int) -> None:
    # header_timeout is 60 s, first_byte_timeout 2 s: a close before the 30 s socket timeout can
    # only come from the first-byte timer.
    with socket.create_connection(("127.0.0.1", small_server), timeout=30) as connection:
        assert _read_all(connection) == b""  # closed without an answer (a timeout would raise)


def test_a_connection_that_starts_a_request_gets_the_header_timeout(small_server: int) -> None:
    with socket.create_connection(("127.0.0.1", small_server), timeout=6) as connection:
        connection.sendall(b"GET / HTTP/1.1\r\n")
        with pytest.raises(TimeoutError):
            connection.recv(65536)  # still open after the first-byte timeout: the head has 60 s


# --- request body limits --------------------------------------------------------------------------

TOO_LARGE = (413, b'{"error_msg":"413 Request Entity Too Large"}\n')


class Recorder:
    """An upstream that records each request: its path, and its body only when it arrived whole."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int | None]] = []  # (path, body size, None when cut short)
        self.server = start_upstream(self, "recorder")

    def __call__(self, handler: Handler) -> None:
        try:
            size = sum(len(chunk) for chunk in handler.body_chunks())
        except (ConnectionError, ValueError, OSError):
            self.seen.append((handler.path, None))
            handler.close_connection = True
            return
        self.seen.append((handler.path, size))
        handler.answer(200, b'{"ok":true}')


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.server.stop()


def body_limits(upstream: str) -> dict[str, Any]:
    return {
        "server": {"max_body_bytes": 1000},
        "services": [
            {"id": "uploads", "path_prefix": "/uploads", "max_body_bytes": 5000, "upstream": upstream}
        ],
        "routes": [
            {"uri": "/*", "upstream": upstream},
            {"uri": "/tiny", "upstream": upstream, "max_body_bytes": 10},
            {"uri": "/*", "service_id": "uploads"},
            {"uri": "/big", "service_id": "uploads", "max_body_bytes": 100_000},
        ],
    }


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory, recorder: Recorder) -> Iterator[int]:
    yield from _serve(tmp_path_factory.mktemp("bodies"), body_limits(recorder.server.url))


@pytest.fixture(scope="module")
def limited_wsgi_proxy(recorder: Recorder) -> Iterator[int]:
    from consumer_auth import Gateway
    from consumer_auth.config import parse_config

    config = parse_config(body_limits(recorder.server.url))
    proxy = Gateway.from_config(config).wsgi_proxy(max_body_bytes=config.server.max_body_bytes)
    server = WSGIServer(proxy)
    yield server.port
    server.stop()


def _post(port: int, path: str, body: bytes, *, chunked: bool) -> tuple[int, bytes]:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
    if chunked:
        framed = b"".join(
            b"%x\r\n%b\r\n" % (len(body[i : i + 100]), body[i : i + 100]) for i in range(0, len(body), 100)
        )
        data = head + b"Transfer-Encoding: chunked\r\n\r\n" + framed + b"0\r\n\r\n"
    else:
        data = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as connection:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.sendall(data)  # refused before the whole body went out: the answer is waiting
        answer = b""
        while True:  # until the whole answer is in (some servers keep the connection open after it)
            head_part, ended, rest = answer.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head_part)
            if ended and length is not None and len(rest) >= int(length.group(1)):
                return int(head_part.split(b" ", 2)[1]), rest
            try:
                chunk = connection.recv(65536)
            except ConnectionResetError:
                chunk = b""
            assert chunk, f"closed before the whole answer: {answer!r}"
            answer += chunk


@pytest.mark.parametrize("front", ["serve", "wsgi-proxy"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("path", "limit"),
    [
        pytest.param("/plain", 1000, id="server-section"),
        pytest.param("/tiny", 10, id="route"),
        pytest.param("/uploads/file", 5000, id="service"),
        pytest.param("/uploads/big", 100_000, id="route-over-service"),
    ],
)
def test_a_body_over_max_body_bytes_is_413_and_never_reaches_the_upstream_whole(
    request: pytest.FixtureRequest, recorder: Recorder, front: str, chunked: bool, path: str, limit: int
) -> None:
    port = request.getfixturevalue("limited_server" if front == "serve" else "limited_wsgi_proxy")
    forwarded = path.removeprefix("/uploads")

    def seen(token: str) -> list[int | None]:
        return [size for target, size in recorder.seen if target == f"{forwarded}?t={token}"]

    fits, over = secrets.token_hex(4), secrets.token_hex(4)  # tell requests apart from earlier tests'
    assert _post(port, f"{path}?t={fits}", b"a" * limit, chunked=chunked) == (200, b'{"ok":true}')
    assert seen(fits) == [limit]
    assert _post(port, f"{path}?t={over}", b"a" * (limit + 1), chunked=chunked) == TOO_LARGE
    if chunked:
        # Forwarded as it came until it crossed the limit, then the upstream connection was dropped:
        # the upstream saw nothing, or a request whose body never ended; never a whole one.
        assert all(size is None for size in seen(over)), seen(over)
    else:  # refused from its Content-Length: nothing was forwarded
        assert seen(over) == []
