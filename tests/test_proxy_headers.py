"""Headers and paths through both real proxies (uvicorn and werkzeug on loopback, a real upstream)."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

import pytest

import proxy_servers
from consumer_auth import Gateway
from proxy_servers import Handler, UpstreamServer, request, start_upstream
from support import basic

ALEX = ("Authorization", basic("alex", "123456"))
EX = ("Host", "example.com")


def serve(kind: str, config: dict[str, Any], upstream: str | None = None) -> int:
    """Serve a gateway built from ``config`` through the ``kind`` proxy; its port."""
    gateway = Gateway.from_dict(config)
    if kind == "asgi":
        return proxy_servers.ASGIServer(gateway.asgi_proxy(upstream=upstream)).port
    return proxy_servers.WSGIServer(gateway.wsgi_proxy(upstream=upstream)).port


@pytest.fixture(params=["asgi", "wsgi"], ids=lambda kind: f"{kind}-proxy")
def kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture(scope="module")
def echo() -> UpstreamServer:
    return start_upstream(name="headers-echo")


def guide(upstream: Any, **service: Any) -> dict[str, Any]:
    return {
        "consumers": [
            {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}}
        ],
        "services": [
            {"id": "app", "path_prefix": "/v1", "hosts": ["example.com"], "upstream": upstream, **service}
        ],
        "routes": [{"id": "all", "service_id": "app", "uri": "/*", "plugins": {"basic-auth": {}}}],
    }


def seen(reply: Any) -> dict[str, Any]:
    assert reply.status == 200, reply.body
    document: dict[str, Any] = json.loads(reply.body)
    return document


def test_request_hop_by_hop_headers_removed(kind: str, echo: UpstreamServer) -> None:
    port = serve(kind, guide(echo.url))
    got = seen(
        request(
            port,
            "GET",
            "/v1/json",
            [
                EX,
                ALEX,
                ("Connection", "keep-alive, X-Private"),
                ("X-Private", "hop"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "keep-alive"),
                ("TE", "trailers"),
                ("Trailer", "X-Checksum"),
                ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
                ("X-End-To-End", "kept"),
            ],
        )
    )
    headers = got["headers"]
    assert headers["x-end-to-end"] == "kept"
    for name in ("x-private", "keep-alive", "proxy-connection", "te", "trailer", "proxy-authorization"):
        assert name not in headers, name
    assert headers.get("connection") in (None, "keep-alive", "close")  # the proxy's own, not the client's


def test_response_hop_by_hop_headers_removed(kind: str) -> None:
    def answer(handler: Handler) -> None:
        handler.answer(
            200,
            b"{}",
            [
                ("Connection", "X-Hop"),
                ("X-Hop", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "keep-alive"),
                ("Server", "upstream/1.0"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
                ("X-End-To-End", "kept"),
            ],
        )

    upstream = start_upstream(answer, "response-headers")
    reply = request(serve(kind, guide(upstream.url)), "GET", "/v1/json", [EX, ALEX])
    assert reply.status == 200
    assert reply.headers["x-end-to-end"] == "kept"
    assert reply.headers["set-cookie"] == "a=1, b=2"
    for name in ("x-hop", "keep-alive", "proxy-connection"):
        assert name not in reply.headers, name
    assert reply.headers.get("server") != "upstream/1.0"
    assert reply.headers.get("connection") in (None, "keep-alive", "close")  # the server's own


def test_x_forwarded_headers(kind: str, echo: UpstreamServer) -> None:
    port = serve(kind, guide(echo.url))
    headers = seen(
        request(
            port,
            "GET",
            "/v1/json",
            [
                ("Host", "Example.com:8080"),
                ALEX,
                ("X-Forwarded-For", "203.0.113.7, 198.51.100.1"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "evil.test"),
                ("X-Forwarded-Port", "1"),
                ("X-Real-IP", "10.0.0.1"),
            ],
        )
    )["headers"]
    assert headers["x-forwarded-for"] == "203.0.113.7, 198.51.100.1, 127.0.0.1"
    assert headers["x-real-ip"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "example.com"
    assert headers["x-forwarded-port"] == str(port)
    assert headers["host"] == "Example.com:8080"


def test_x_forwarded_for_started_when_absent(kind: str, echo: UpstreamServer) -> None:
    headers = seen(request(serve(kind, guide(echo.url)), "GET", "/v1/json", [EX, ALEX]))["headers"]
    assert headers["x-forwarded-for"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("pass_host", "extra", "expected"),
    [
        pytest.param("pass", {}, "example.com", id="pass"),
        pytest.param("node", {}, "NODE", id="node"),
        pytest.param("rewrite", {"upstream_host": "internal.test"}, "internal.test", id="rewrite"),
    ],
)
def test_pass_host(
    kind: str, echo: UpstreamServer, pass_host: str, extra: dict[str, str], expected: str
) -> None:
    upstream = {"nodes": {echo.authority: 1}, "pass_host": pass_host, **extra}
    headers = seen(request(serve(kind, guide(upstream)), "GET", "/v1/json", [EX, ALEX]))["headers"]
    assert headers["host"] == (echo.authority if expected == "NODE" else expected)


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        pytest.param("/v1/json?x=1&y=%2F", "/json?x=1&y=%2F", id="prefix-stripped-query-kept"),
        pytest.param("/v1/a%2Fb/c%20d?q=%41", "/a%2Fb/c%20d?q=%41", id="raw-encoding-kept"),
        pytest.param("/v1/", "/", id="prefix-alone-is-root"),
        pytest.param("/v1/public/../private?z", "/private?z", id="dot-segments-resolved"),
    ],
)
def test_prefix_stripped_on_the_raw_path(
    kind: str, echo: UpstreamServer, target: str, forwarded: str
) -> None:
    config = guide(echo.url)
    config["routes"].append({"id": "root", "service_id": "app", "uri": "/", "plugins": {"basic-auth": {}}})
    assert seen(request(serve(kind, config), "GET", target, [EX, ALEX]))["target"] == forwarded


def test_prefix_kept_when_not_stripped(kind: str, echo: UpstreamServer) -> None:
    port = serve(kind, guide(echo.url, strip_path_prefix=False))
    assert seen(request(port, "GET", "/v1/json?x=1", [EX, ALEX]))["target"] == "/v1/json?x=1"


def test_request_body_method_and_upstream_status_pass_through(kind: str) -> None:
    def answer(handler: Handler) -> None:
        body = b"".join(handler.body_chunks())
        handler.answer(
            418, json.dumps({"method": handler.command, "body": body.decode()}).encode(), [("X-Up", "1")]
        )

    upstream = start_upstream(answer, "teapot")
    reply = request(serve(kind, guide(upstream.url)), "PUT", "/v1/item", [EX, ALEX], body=b"hello upstream")
    assert reply.status == 418
    assert json.loads(reply.body) == {"method": "PUT", "body": "hello upstream"}
    assert reply.headers["x-up"] == "1"


def test_head_through_the_proxy(kind: str, echo: UpstreamServer) -> None:
    port = serve(kind, guide(echo.url))
    head = request(port, "HEAD", "/v1/json", [EX, ALEX])
    assert head.status == 200
    assert head.body == b""
    assert int(head.headers["content-length"]) > 0  # the length a GET would have
    assert head.headers["content-type"] == "application/json"


def test_unmatched_pass_forwards_to_the_default_upstream(kind: str, echo: UpstreamServer) -> None:
    config = {"unmatched": "pass", "routes": [{"uri": "/guarded", "plugins": {"basic-auth": {}}}]}
    port = serve(kind, config, upstream=echo.url)
    got = seen(request(port, "GET", "/anything/a%2Fb?x", [("X-Consumer-Username", "admin")]))
    assert got["target"] == "/anything/a%2Fb?x"
    assert "x-consumer-username" not in got["headers"]


def _websocket_handshake(port: int, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    lines = [
        "GET /v1/socket HTTP/1.1",
        "Host: example.com",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers),
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()


def test_websocket_handshakes_are_decided_but_not_forwarded() -> None:
    upstream = start_upstream(name="websocket-upstream")
    port = serve("asgi", guide(upstream.url))
    assert _websocket_handshake(port, []) == (401, b'{"message":"Missing authorization in request"}\n')
    assert _websocket_handshake(port, [ALEX]) == (501, b'{"error_msg":"501 Not Implemented"}\n')
    assert upstream.count == 0
