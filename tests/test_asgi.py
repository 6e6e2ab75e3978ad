"""ASGI specifics: lifespan, websockets, Starlette conventions, mounting, slow hashes off the loop."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.authentication import requires
from starlette.responses import JSONResponse

import configs
from consumer_auth import BasicAuthPlugin, Consumer, Gateway, Route, Service, hash_password
from consumer_auth.passwords import Argon2Password, PlaintextPassword
from support import basic, call_asgi, echo_asgi


async def run_lifespan(app: Any) -> list[dict[str, Any]]:
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    return sent


def test_lifespan_passes_through() -> None:
    sent = asyncio.run(run_lifespan(configs.gateway("guide").asgi(echo_asgi)))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def websocket(
    app: Any, path: str, headers: list[tuple[bytes, bytes]], extensions: dict[str, Any]
) -> list[dict[str, Any]]:
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"example.com"), *headers],
        "subprotocols": [],
        "extensions": extensions,
    }
    inbox: list[dict[str, Any]] = [{"type": "websocket.connect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if inbox:
            return inbox.pop(0)
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def test_websocket_handshake_authenticated() -> None:
    app = configs.gateway("guide").asgi(echo_asgi)
    sent = asyncio.run(websocket(app, "/v1/json", [(b"authorization", basic("alex", "123456").encode())], {}))
    assert sent[0]["type"] == "websocket.accept"
    seen = json.loads(sent[1]["text"])
    assert seen["consumer"] == "alex"
    assert seen["path"] == "/json"
    assert seen["headers"]["x-consumer-username"] == "alex"


def test_websocket_denial_response_when_supported() -> None:
    app = configs.gateway("guide").asgi(echo_asgi)
    sent = asyncio.run(websocket(app, "/v1/json", [], {"websocket.http.response": {}}))
    assert sent[0]["type"] == "websocket.http.response.start"
    assert sent[0]["status"] == 401
    assert (b"www-authenticate", b"Basic realm='.'") in sent[0]["headers"]
    assert sent[1]["body"] == b'{"message":"Missing authorization in request"}\n'


def test_websocket_closed_when_denial_response_unsupported() -> None:
    app = configs.gateway("guide").asgi(echo_asgi)
    sent = asyncio.run(websocket(app, "/v1/json", [(b"authorization", basic("alex", "x").encode())], {}))
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": ""}]


def starlette_style_app() -> FastAPI:
    app = FastAPI()

    @app.get("/json")
    @requires("authenticated")
    async def json_view(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "user": request.user.display_name,
                "authenticated": request.user.is_authenticated,
                "root_path": request.scope["root_path"],
                "url": str(request.url),
            }
        )

    return app


def test_fastapi_mounted_under_service_prefix() -> None:
    gateway = Gateway(
        consumers=[Consumer("alex", password="123456")],
        services=[Service("app", path_prefix="/v1")],
        routes=[Route("/*", service_id="app", plugins=[BasicAuthPlugin()])],
    )

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=gateway.asgi(starlette_style_app()))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.get("/v1/json?a=1", headers={"Authorization": basic("alex", "123456")})

    response = asyncio.run(run())
    assert response.status_code == 200, response.text
    assert response.json() == {
        "user": "alex",
        "authenticated": True,
        "root_path": "/v1",
        "url": "http://testserver/v1/json?a=1",
    }


def test_mounted_app_path_below_existing_root_path() -> None:
    gateway = Gateway(
        consumers=[Consumer("alex", password="123456")],
        services=[Service("app", path_prefix="/v1")],
        routes=[Route("/json", service_id="app", plugins=[BasicAuthPlugin()])],
    )
    reply = asyncio.run(
        call_asgi(
            gateway.asgi(echo_asgi),
            "GET",
            "/v1/json",
            [("Authorization", basic("alex", "123456"))],
            root_path="/outer",
        )
    )
    assert reply.seen()["path"] == "/json"
    assert reply.seen()["mount"] == "/outer/v1"


class SpyVerifier:
    """Wraps a verifier and records the thread each verification ran in."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.slow = inner.slow
        self.threads: list[threading.Thread] = []

    @property
    def identity(self) -> bytes:
        result: bytes = self.inner.identity
        return result

    def verify(self, password: str) -> bool:
        self.threads.append(threading.current_thread())
        result: bool = self.inner.verify(password)
        return result

    def decoy(self) -> Any:
        return self.inner.decoy()

    def needs_rehash(self) -> bool:
        result: bool = self.inner.needs_rehash()
        return result


@pytest.mark.parametrize(
    ("verifier", "off_loop"),
    [
        pytest.param(Argon2Password(hash_password("123456")), True, id="argon2-off-the-loop"),
        pytest.param(PlaintextPassword("123456"), False, id="plaintext-inline"),
    ],
)
def test_slow_verification_leaves_the_event_loop(verifier: Any, off_loop: bool) -> None:
    alex = Consumer("alex", password="placeholder")
    spy = SpyVerifier(verifier)
    alex.credentials[0].verifier = spy  # type: ignore[assignment]
    gateway = Gateway(consumers=[alex], routes=[Route("/*", plugins=[BasicAuthPlugin()])])
    loop_thread: list[threading.Thread] = []

    async def run() -> int:
        loop_thread.append(threading.current_thread())
        reply = await call_asgi(
            gateway.asgi(echo_asgi), "GET", "/x", [("Authorization", basic("alex", "123456"))]
        )
        return reply.status

    assert asyncio.run(run()) == 200
    assert len(spy.threads) == 1
    assert (spy.threads[0] is not loop_thread[0]) is off_loop
