"""Request framing through the real proxies: ``Connection`` naming a framing header, bodies forwarded with
their own framing, two ``Host`` headers, and upstream answers that do not match a request.

Every front a user runs is driven over loopback sockets: ``consumer-auth serve`` (a subprocess), the ASGI
proxy on uvicorn and the WSGI proxy on werkzeug, in front of :class:`~proxy_servers.RawUpstream`, which
logs every byte it receives and reads requests as llhttp does. The attack of SPEC §8: a ``Connection:
Content-Length`` used to make both proxies drop ``Content-Length`` while still sending the body, which the
upstream then read as a second, unauthenticated request carrying a forged identity.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httptools
import pytest
import yaml

import proxy_servers
from consumer_auth import Gateway
from proxy_servers import CONSUMER_AUTH, Process, RawUpstream
from support import basic

BAD_REQUEST = b'{"error_msg":"400 Bad Request"}\n'
ALEX = basic("alex", "123456")
SMUGGLED = b"GET /admin HTTP/1.1\r\nHost: example.com\r\nX-Consumer-Username: admin\r\n\r\n"
FRONTS = ["serve", "asgi-proxy", "wsgi-proxy"]


def config(upstream: str) -> dict[str, Any]:
    return {
        "consumers": [
            {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}}
        ],
        "routes": [
            {"id": "public", "uri": "/public/*", "upstream": upstream},
            {"id": "all", "uri": "/*", "upstream": upstream, "plugins": {"basic-auth": {}}},
        ],
    }


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str, dict[str, Any]], int]]:
    """Start a front of the given kind for a configuration; its port."""
    processes: list[Process] = []

    def run(kind: str, settings: dict[str, Any]) -> int:
        if kind == "serve":
            path = tmp_path_factory.mktemp("serve") / "gateway.yaml"
            path.write_text(yaml.safe_dump(settings))
            process = Process(
                [CONSUMER_AUTH, "serve", "--config", str(path), "--port", "0", "--no-access-log"]
            )
            processes.append(process)
            return process.uvicorn_port()
        gateway = Gateway.from_dict(settings)
        if kind == "asgi-proxy":
            return proxy_servers.ASGIServer(gateway.asgi_proxy()).port
        return proxy_servers.WSGIServer(gateway.wsgi_proxy()).port

    yield run
    for process in processes:
        assert process.terminate() == 0


@pytest.fixture(scope="module")
def upstream() -> RawUpstream:
    return RawUpstream(extra={"/extra/whole": _answer("/smuggled"), "/extra/part": _answer("/smuggled")[:20]})


def _answer(target: str) -> bytes:
    body = json.dumps({"target": target, "headers": [], "body": ""}).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)


@pytest.fixture(scope="module", params=FRONTS)
def front(
    request: pytest.FixtureRequest, start: Callable[[str, dict[str, Any]], int], upstream: RawUpstream
) -> int:
    port: int = start(request.param, config(upstream.url))
    return port


def send(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes on a new connection; the first response (status, lower-case headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def _post(connection: str, *, auth: bool = True, target: str = "/v1/post") -> bytes:
    head = f"POST {target} HTTP/1.1\r\nHost: example.com\r\nConnection: {connection}\r\n"
    if auth:
        head += f"Authorization: {ALEX}\r\n"
    return head.encode() + b"Content-Length: %d\r\n\r\n%b" % (len(SMUGGLED), SMUGGLED)


ATTACKS: dict[str, bytes] = {
    "content-length": _post("Content-Length"),
    "close-content-length": _post("close, content-length"),
    "upper-case": _post("keep-alive, CONTENT-LENGTH"),
    "underscore": _post("Content_Length"),
    "public-route": _post("content-length", auth=False, target="/public/post"),
    "host": _post("Host"),
    "transfer-encoding": b"POST /v1/post HTTP/1.1\r\nHost: example.com\r\nConnection: Transfer-Encoding\r\n"
    + f"Authorization: {ALEX}\r\n".encode()
    + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_connection_naming_a_framing_header_is_refused(
    front: int, upstream: RawUpstream, attack: str
) -> None:
    before = len(upstream.requests)
    status, headers, body = send(front, ATTACKS[attack])
    assert (status, body) == (400, BAD_REQUEST)
    assert headers["content-type"] == "text/plain; charset=utf-8"
    # Nothing reached the upstream: neither the request nor the body read as one.
    assert upstream.requests[before:] == []


def test_a_body_goes_with_its_own_framing(front: int, upstream: RawUpstream) -> None:
    """A body shaped like a request is a body: the upstream reads one request, its body intact."""
    head = f"POST /v1/post HTTP/1.1\r\nHost: example.com\r\nAuthorization: {ALEX}\r\n".encode()
    for framing in (
        b"Content-Length: %d\r\n\r\n%b" % (len(SMUGGLED), SMUGGLED),
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED),
        b"Content_Length: 0\r\nContent-Length: %d\r\n\r\n%b" % (len(SMUGGLED), SMUGGLED),
    ):
        before = len(upstream.requests)
        status, _, body = send(front, head + framing)
        assert status == 200, body
        seen = upstream.requests[before:]
        assert [request["target"] for request in seen] == ["/v1/post"]
        assert seen[0]["body"] == SMUGGLED.decode()
        names = [name.lower().replace("_", "-") for name, _ in seen[0]["headers"]]
        assert names.count("content-length") + names.count("transfer-encoding") == 1


def test_no_smuggled_request_and_no_answer_to_another_client_under_load(
    front: int, upstream: RawUpstream
) -> None:
    """Clients on kept-alive connections each get their own answer while others try to smuggle."""
    before = len(upstream.requests)
    wrong: list[tuple[str, str]] = []
    failures: list[BaseException] = []
    attacks = list(ATTACKS.values())

    def client(number: int) -> None:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", front, timeout=30)
            for round_ in range(15):
                target = f"/v1/client/{number}/{round_}"
                connection.request("GET", target, headers={"Host": "example.com", "Authorization": ALEX})
                response = connection.getresponse()
                got = json.loads(response.read())["target"]
                if got != target:
                    wrong.append((target, got))
                if round_ % 5 == 0:
                    status, _, _ = send(front, attacks[(number + round_) % len(attacks)])
                    if status != 400:
                        wrong.append(("attack", str(status)))
            connection.close()
        except BaseException as error:  # reported below, with the thread's name
            failures.append(error)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures
    assert wrong == []
    targets = [request["target"] for request in upstream.requests[before:]]
    assert len(targets) == 8 * 15
    assert all(target.startswith("/v1/client/") for target in targets)


@pytest.mark.parametrize("path", ["/extra/whole", "/extra/part"])
def test_a_connection_that_answered_twice_is_not_reused(front: int, upstream: RawUpstream, path: str) -> None:
    """An upstream that writes a second answer (whole, or its start) after the one asked for: the next
    request through the proxy gets its own answer, never the extra one."""
    headers = {"Host": "example.com", "Authorization": ALEX}
    connection = http.client.HTTPConnection("127.0.0.1", front, timeout=30)
    try:
        for round_ in range(5):
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            assert json.loads(response.read())["target"] == path
            target = f"/v1/after/{round_}"
            connection.request("GET", target, headers=headers)
            response = connection.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["target"] == target
    finally:
        connection.close()


TWO_HOSTS: dict[str, bytes] = {
    "two": b"Host: public.example.com\r\nHost: secure.example.com\r\n",
    "two-reversed": b"Host: secure.example.com\r\nHost: public.example.com\r\n",
    "same-twice": b"Host: secure.example.com\r\nhost: secure.example.com\r\n",
    "comma": b"Host: secure.example.com, public.example.com\r\n",
}


def tenants(upstream: str) -> dict[str, Any]:
    """Route ``/tenant`` public on one host, guarded on the other (issue: the ASGI adapter read the last
    Host, Starlette the first)."""
    return {
        "consumers": [
            {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}}
        ],
        "routes": [
            {"id": "pub", "uri": "/tenant", "hosts": ["public.example.com"], "upstream": upstream},
            {
                "id": "sec",
                "uri": "/tenant",
                "hosts": ["secure.example.com"],
                "upstream": upstream,
                "plugins": {"basic-auth": {}},
            },
        ],
    }


@pytest.mark.parametrize("kind", FRONTS)
def test_two_host_headers_are_refused_by_the_proxies(
    start: Callable[[str, dict[str, Any]], int], upstream: RawUpstream, kind: str
) -> None:
    port = start(kind, tenants(upstream.url))
    before = len(upstream.requests)
    for name, hosts in TWO_HOSTS.items():
        status, headers, body = send(port, b"GET /tenant HTTP/1.1\r\n" + hosts + b"\r\n")
        assert (status, body) == (400, BAD_REQUEST), name
        assert headers["content-type"] == "text/plain; charset=utf-8"
    assert upstream.requests[before:] == []
    # One Host still decides as before.
    assert send(port, b"GET /tenant HTTP/1.1\r\nHost: public.example.com\r\n\r\n")[0] == 200
    assert send(port, b"GET /tenant HTTP/1.1\r\nHost: secure.example.com\r\n\r\n")[0] == 401


# -- what already held, kept holding -------------------------------------------------------------------


def exchange_all(port: int, data: bytes) -> bytes:
    """Send ``data`` on one connection and read until the front closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def _get(target: str, *, auth: bool = True, close: bool = False, extra: bytes = b"") -> bytes:
    head = f"GET {target} HTTP/1.1\r\nHost: example.com\r\n".encode()
    if auth:
        head += f"Authorization: {ALEX}\r\n".encode()
    if close:
        head += b"Connection: close\r\n"
    return head + extra + b"\r\n"


def _post_body(target: str, body: bytes) -> bytes:
    return (
        f"POST {target} HTTP/1.1\r\nHost: example.com\r\nAuthorization: {ALEX}\r\n".encode()
        + b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
    )


class _Answers:
    """httptools callbacks: every response in a stream of bytes, as (status, body)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.found: list[tuple[int, bytes]] = []
        self.body = b""

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.found.append((self.parser.get_status_code(), self.body))
        self.body = b""


def answers(data: bytes) -> list[tuple[int, bytes]]:
    parsed = _Answers()
    parsed.parser.feed_data(data)
    return parsed.found


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            _get("/v1/one") + _post_body("/v1/two", SMUGGLED) + _get("/v1/three", close=True),
            [(200, "/v1/one"), (200, "/v1/two"), (200, "/v1/three")],
            id="get-post-get",
        ),
        pytest.param(
            _post_body("/v1/one", SMUGGLED) + _get("/v1/two", close=True),
            [(200, "/v1/one"), (200, "/v1/two")],
            id="post-get",
        ),
        pytest.param(
            _get("/v1/one") + _get("/v1/admin", auth=False, close=True),
            [(200, "/v1/one"), (401, None)],
            id="then-unauthenticated",
        ),
    ],
)
def test_pipelined_requests_are_answered_in_order(
    request: pytest.FixtureRequest,
    front: int,
    upstream: RawUpstream,
    data: bytes,
    expected: list[tuple[int, str | None]],
) -> None:
    before = len(upstream.requests)
    got = answers(exchange_all(front, data))
    if request.node.callspec.params["front"] == "wsgi-proxy":
        # werkzeug's development server answers one request per connection (Connection: close) and
        # drops the rest: what it answers must still be the first request's answer.
        expected = expected[:1]
    assert [status for status, _ in got] == [status for status, _ in expected]
    targets = [target for _, target in expected if target is not None]
    assert [json.loads(body)["target"] for status, body in got if status == 200] == targets
    assert [request["target"] for request in upstream.requests[before:]] == targets


def test_absolute_form_targets_are_decided_on_their_path(front: int, upstream: RawUpstream) -> None:
    before = len(upstream.requests)
    status, _, _ = send(front, b"GET http://example.com/v1/abs HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert status == 401
    assert upstream.requests[before:] == []
    status, _, body = send(front, _get("http://example.com/v1/abs"))
    assert status == 200, body
    (seen,) = upstream.requests[before:]
    assert seen["target"] == "/v1/abs"  # origin-form upstream


@pytest.mark.parametrize(
    "upgrade",
    [
        pytest.param(
            b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
            id="h2c",
        ),
        pytest.param(
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n",
            id="websocket",
        ),
    ],
)
def test_upgrades_never_become_a_tunnel(front: int, upstream: RawUpstream, upgrade: bytes) -> None:
    """An upgrade is never carried: whatever the front answers, the bytes after it are never relayed to
    the upstream as a request of their own."""
    before = len(upstream.requests)
    exchange_all(front, _get("/v1/up", extra=upgrade) + _get("/v1/admin", auth=False, close=True))
    seen = upstream.requests[before:]
    assert all(request["target"] == "/v1/up" for request in seen), seen
    for request in seen:
        names = {name.lower() for name, _ in request["headers"]}
        # Forwarded at most as a plain request: the upstream is never asked to switch protocols.
        assert "upgrade" not in names
        assert "http2-settings" not in names  # named in Connection: hop-by-hop


def test_connect_is_never_a_tunnel(front: int, upstream: RawUpstream) -> None:
    before = len(upstream.received)
    answer = exchange_all(
        front,
        f"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nAuthorization: {ALEX}\r\n\r\n".encode()
        + SMUGGLED,
    )
    got = answers(answer)
    assert got, answer
    # Refused, or (the WSGI proxy on werkzeug, which reads the target as a path) forwarded as a plain
    # origin-form request with its own framing and answered as one: never a tunnel.
    assert got[0][0] != 200 or json.loads(got[0][1])["target"].startswith("/"), got
    assert b"/admin" not in b"".join(upstream.received[before:])
