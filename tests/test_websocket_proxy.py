"""Websocket forwarding (``enable_websocket: true``, SPEC §11) through ``consumer-auth serve`` and the ASGI
proxy on uvicorn: a real websocket client, a real websocket upstream on loopback."""

from __future__ import annotations

import asyncio
import signal
import ssl
import threading
from collections.abc import Iterator, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from consumer_auth import Gateway
from proxy_servers import CONSUMER_AUTH, ASGIServer, Process, refused_port
from support import basic

ALEX = {"Authorization": basic("alex", "123456")}
MISSING = b'{"message":"Missing authorization in request"}\n'
PASSWORD_IS_ERROR = b'{"message":"Password is error"}\n'


def _pick(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """The first of the upstream's subprotocols the client offers; none is fine too."""
    return next((name for name in offered if name in ("chat", "superchat")), None)


class EchoUpstream:
    """A websocket server in a thread: echoes every message; ``/bye`` closes with 4001 on "bye";
    ``/forbidden`` refuses the handshake with 403. ``requests`` records each handshake's path and headers."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)
        self.thread.start()
        assert self._ready.wait(10)

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        self.requests.append((request.path, {k.lower(): v for k, v in request.headers.raw_items()}))
        if request.path.startswith("/forbidden"):
            return connection.respond(HTTPStatus.FORBIDDEN, "go away\n")
        return None

    async def _handler(self, connection: ServerConnection) -> None:
        async for message in connection:
            if message == "bye":
                await connection.close(4001, "asked to leave")
                return
            await connection.send(message)

    async def _main(self) -> None:
        self._stop = self.loop.create_future()
        async with serve(
            self._handler, "127.0.0.1", 0, process_request=self._check, select_subprotocol=_pick
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set_result, None)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[EchoUpstream]:
    server = EchoUpstream()
    yield server
    server.stop()


def config(upstream: str) -> dict[str, Any]:
    return {
        "consumers": [
            {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}}
        ],
        "services": [{"id": "s", "path_prefix": "/v1", "upstream": upstream}],
        "routes": [
            {
                "id": "ws",
                "service_id": "s",
                "uri": "/ws/*",
                "enable_websocket": True,
                "plugins": {"basic-auth": {}},
            },
            {"id": "plain", "service_id": "s", "uri": "/plain", "plugins": {"basic-auth": {}}},
            {"id": "open-ws", "service_id": "s", "uri": "/open", "enable_websocket": True},
            {"id": "forbidden", "service_id": "s", "uri": "/forbidden", "enable_websocket": True},
        ],
    }


@pytest.fixture(scope="module")
def proxy(upstream: EchoUpstream) -> int:
    return ASGIServer(Gateway.from_dict(config(f"http://127.0.0.1:{upstream.port}")).asgi_proxy()).port


def test_serve_forwards_a_websocket_with_alex_credentials_and_refuses_it_without(
    upstream: EchoUpstream, tmp_path: Path
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config(f"http://127.0.0.1:{upstream.port}")))
    process = Process([CONSUMER_AUTH, "serve", "--config", str(path), "--port", "0"])
    port = process.uvicorn_port()
    with connect(f"ws://127.0.0.1:{port}/v1/ws/echo", additional_headers=ALEX, open_timeout=30) as websocket:
        websocket.send("hello")
        assert websocket.recv(timeout=30) == "hello"
        websocket.send(b"\x00\x01binary")
        assert websocket.recv(timeout=30) == b"\x00\x01binary"
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{port}/v1/ws/echo", open_timeout=30)
    assert refused.value.response.status_code == 401
    assert refused.value.response.body == MISSING
    assert refused.value.response.headers["WWW-Authenticate"] == "Basic realm='.'"
    process.wait_for(
        r'"GET /v1/ws/echo" 101 .* route=ws consumer=alex upstream=127\.0\.0\.1:\d+$', process.stdout
    )
    process.wait_for(r'"GET /v1/ws/echo" 401 ', process.stdout)
    assert process.terminate() == 0
    assert "123456" not in "\n".join(process.stdout + process.stderr)


def test_sigterm_closes_an_open_websocket_as_going_away(upstream: EchoUpstream, tmp_path: Path) -> None:
    """An open websocket does not hold the shutdown for the graceful timeout (an hour: the test would time
    out waiting for the exit); its client is told 1001, going away."""
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config(f"http://127.0.0.1:{upstream.port}")))
    process = Process(
        [CONSUMER_AUTH, "serve", "--config", str(path), "--port", "0", "--graceful-timeout", "3600"]
    )
    port = process.uvicorn_port()
    with connect(f"ws://127.0.0.1:{port}/v1/ws/echo", additional_headers=ALEX, open_timeout=30) as websocket:
        websocket.send("before")
        assert websocket.recv(timeout=30) == "before"
        process.proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            websocket.recv(timeout=30)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1001
    assert process.terminate() == 0


def test_serve_forwards_a_websocket_over_tls(upstream: EchoUpstream, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(keyfile))
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config(f"http://127.0.0.1:{upstream.port}")))
    process = Process(
        [CONSUMER_AUTH, "serve", "--config", str(path), "--port", "0", "--ssl-certfile", str(certfile),
         "--ssl-keyfile", str(keyfile)]
    )  # fmt: skip
    port = process.uvicorn_port()
    context = ssl.create_default_context()
    ca.configure_trust(context)
    url = f"wss://127.0.0.1:{port}/v1/ws/echo"
    with connect(url, additional_headers=ALEX, ssl=context, open_timeout=30) as websocket:
        websocket.send("over tls")
        assert websocket.recv(timeout=30) == "over tls"
    _, received = upstream.requests[-1]
    assert received["x-forwarded-proto"] == "https"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, ssl=context, open_timeout=30)
    assert (refused.value.response.status_code, refused.value.response.body) == (401, MISSING)
    assert process.terminate() == 0


def test_the_upstream_gets_the_forwarded_handshake(upstream: EchoUpstream, proxy: int) -> None:
    headers = {**ALEX, "Origin": "https://app.example", "X-Trace": "t-1"}
    with connect(
        f"ws://127.0.0.1:{proxy}/v1/ws/room?id=7", additional_headers=headers, open_timeout=30
    ) as websocket:
        websocket.send("ping")
        assert websocket.recv(timeout=30) == "ping"
    path, received = upstream.requests[-1]
    assert path == "/ws/room?id=7"  # the service prefix is stripped, the query kept
    assert received["x-consumer-username"] == "alex"
    assert received["origin"] == "https://app.example"
    assert received["x-trace"] == "t-1"
    assert received["x-forwarded-proto"] == "http"
    assert received["x-forwarded-for"] == "127.0.0.1"
    assert received["host"] == f"127.0.0.1:{proxy}"


def test_a_subprotocol_is_negotiated_with_the_upstream(proxy: int) -> None:
    url = f"ws://127.0.0.1:{proxy}/v1/ws/echo"
    offered = [Subprotocol("superchat"), Subprotocol("other")]
    with connect(url, additional_headers=ALEX, subprotocols=offered, open_timeout=30) as websocket:
        assert websocket.subprotocol == "superchat"


def test_the_upstream_close_code_reaches_the_client(proxy: int) -> None:
    with connect(f"ws://127.0.0.1:{proxy}/v1/ws/bye", additional_headers=ALEX, open_timeout=30) as websocket:
        websocket.send("bye")
        with pytest.raises(ConnectionClosed) as closed:
            websocket.recv(timeout=30)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "asked to leave")


def test_a_large_message_goes_both_ways(proxy: int) -> None:
    message = bytes(range(256)) * 4096  # 1 MiB
    with connect(
        f"ws://127.0.0.1:{proxy}/v1/ws/echo", additional_headers=ALEX, open_timeout=30, max_size=2**22
    ) as websocket:
        websocket.send(message)
        assert websocket.recv(timeout=30) == message


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param({}, MISSING, id="no-credentials"),
        pytest.param({"Authorization": basic("alex", "wrong")}, PASSWORD_IS_ERROR, id="wrong-password"),
    ],
)
def test_a_refused_handshake_gets_the_401_bytes(
    proxy: int, upstream: EchoUpstream, headers: dict[str, str], body: bytes
) -> None:
    before = len(upstream.requests)
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{proxy}/v1/ws/echo", additional_headers=headers, open_timeout=30)
    response = refused.value.response
    assert (response.status_code, response.body) == (401, body)
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert len(upstream.requests) == before  # never reached the upstream


def test_a_route_without_enable_websocket_answers_501(proxy: int) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{proxy}/v1/plain", additional_headers=ALEX, open_timeout=30)
    assert refused.value.response.status_code == 501


def test_a_route_without_auth_forwards_anyone(proxy: int) -> None:
    with connect(f"ws://127.0.0.1:{proxy}/v1/open", open_timeout=30) as websocket:
        websocket.send("hi")
        assert websocket.recv(timeout=30) == "hi"


def test_the_upstream_refusing_the_handshake_is_passed_on(proxy: int) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{proxy}/v1/forbidden", additional_headers=ALEX, open_timeout=30)
    assert (refused.value.response.status_code, refused.value.response.body) == (403, b"go away\n")


def test_an_unreachable_upstream_is_502() -> None:
    port = ASGIServer(Gateway.from_dict(config(f"http://127.0.0.1:{refused_port()}")).asgi_proxy()).port
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{port}/v1/ws/echo", additional_headers=ALEX, open_timeout=30)
    assert (refused.value.response.status_code, refused.value.response.body) == (
        502,
        b'{"error_msg":"502 Bad Gateway"}\n',
    )
