"""FastAPI and Starlette: the OpenAPI security scheme, the consumer dependencies, ``request.user`` /
``request.auth`` (the parity table is in test_conformance.py, mode ``fastapi``)."""

from __future__ import annotations

import asyncio
import threading
from typing import Annotated, Any

import httpx
import pytest
from asgiref.testing import ApplicationCommunicator
from fastapi import Depends, FastAPI, Request, WebSocket
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.responses import JSONResponse
from starlette.routing import Route

from consumer_auth import ConfigError, Consumer, Gateway
from consumer_auth.contrib.fastapi import (
    ConsumerAuthMiddleware,
    RequireConsumer,
    current_consumer,
    install,
    require_consumer,
)
from consumer_auth.contrib.starlette import install as install_starlette
from consumer_auth.sansio.passwords import Argon2Password
from support import basic, call_asgi, cheap_argon2

ALEX = basic("alex", "123456")
JACK = basic("jack", "654321")
GATEWAY: dict[str, Any] = {
    "consumers": [
        {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}},
        {"username": "jack", "plugins": {"basic-auth": {"username": "jack", "password": "654321"}}},
    ],
    "routes": [
        {"uri": "/routed", "methods": ["GET"], "plugins": {"basic-auth": {}}},
        {"uri": "/hidden", "plugins": {"basic-auth": {"hide_credentials": True}}},
    ],
    "unmatched": "pass",
}
alex_only = RequireConsumer(consumers=["alex"], realm="staff")


def make_app(config: object = GATEWAY) -> FastAPI:
    app = FastAPI()
    install(app, config)

    @app.get("/mine")
    async def mine(consumer: Annotated[Consumer, Depends(require_consumer)]) -> dict[str, Any]:
        return {"consumer": consumer.username}

    @app.api_route("/mine-or-head", methods=["GET", "HEAD"], include_in_schema=False)
    async def mine_or_head(consumer: Annotated[Consumer, Depends(require_consumer)]) -> dict[str, Any]:
        return {"consumer": consumer.username}

    @app.get("/mine-sync")
    def mine_sync(
        request: Request, consumer: Annotated[Consumer, Depends(require_consumer)]
    ) -> dict[str, Any]:
        return {
            "consumer": consumer.username,
            "user": request.user.display_name,
            "scopes": request.auth.scopes,
        }

    @app.get("/alex-only")
    async def only(consumer: Annotated[Consumer, Depends(alex_only)]) -> dict[str, Any]:
        return {"consumer": consumer.username}

    @app.get("/routed")
    async def routed(
        request: Request, consumer: Annotated[Consumer | None, Depends(current_consumer)]
    ) -> dict[str, Any]:
        return {
            "consumer": consumer.username if consumer else None,
            "user": request.user.display_name,
            "authenticated": request.user.is_authenticated,
            "scopes": request.auth.scopes,
        }

    @app.get("/hidden")
    async def hidden(
        request: Request, consumer: Annotated[Consumer, Depends(require_consumer)]
    ) -> dict[str, Any]:
        return {"consumer": consumer.username, "authorization": request.headers.get("authorization")}

    @app.get("/public")
    async def public(
        request: Request, consumer: Annotated[Consumer | None, Depends(current_consumer)]
    ) -> dict[str, Any]:
        return {
            "consumer": consumer,
            "authenticated": request.user.is_authenticated,
            "scopes": request.auth.scopes,
        }

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, consumer: Annotated[Consumer, Depends(require_consumer)]) -> None:
        await websocket.accept()
        await websocket.send_text(consumer.username)
        await websocket.close()

    return app


class Client:
    """A small synchronous client over ``httpx.ASGITransport`` (one event loop per request)."""

    def __init__(self, app: Any, auth: httpx.Auth | None = None) -> None:
        self.app = app
        self.auth = auth

    def request(self, method: str, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        async def run() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver", auth=self.auth
            ) as http:
                return await http.request(method, url, headers=headers)

        return asyncio.run(run())

    def get(self, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.request("GET", url, headers)

    def head(self, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.request("HEAD", url, headers)


def client(app: Any) -> Client:
    return Client(app)


def websocket(app: Any, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Open ``/ws`` and return what the app sent until it closed the connection."""

    async def run() -> list[dict[str, Any]]:
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "path": "/ws",
            "raw_path": b"/ws",
            "root_path": "",
            "query_string": b"",
            "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 50000),
            "subprotocols": [],
        }
        communicator = ApplicationCommunicator(app, scope)  # type: ignore[no-untyped-call]
        await communicator.send_input({"type": "websocket.connect"})  # type: ignore[no-untyped-call]
        sent: list[dict[str, Any]] = []
        while not sent or sent[-1]["type"] != "websocket.close":
            sent.append(await communicator.receive_output(timeout=5))  # type: ignore[no-untyped-call]
        await communicator.wait(timeout=5)  # type: ignore[no-untyped-call]
        return sent

    return asyncio.run(run())


def test_openapi_marks_the_protected_routes() -> None:
    schema = client(make_app()).get("/openapi.json").json()
    assert schema["components"]["securitySchemes"] == {
        "basic-auth": {
            "type": "http",
            "scheme": "basic",
            "description": "HTTP Basic credentials of a consumer.",
        }
    }
    for route in ("/mine", "/mine-sync", "/alex-only", "/hidden"):
        assert schema["paths"][route]["get"]["security"] == [{"basic-auth": []}], route
    for route in ("/routed", "/public"):
        assert "security" not in schema["paths"][route]["get"], route


def test_authorize_in_docs_works() -> None:
    # What the "Authorize" button of /docs does: send HTTP Basic credentials on every request.
    http = Client(make_app(), auth=httpx.BasicAuth("alex", "123456"))
    assert http.get("/docs").status_code == 200
    assert http.get("/mine").json() == {"consumer": "alex"}


@pytest.mark.parametrize(
    ("authorization", "body", "challenge"),
    [
        pytest.param(
            None, b'{"message":"Missing authorization in request"}\n', "Basic realm='.'", id="missing"
        ),
        pytest.param("Basic !!", b'{"message":"Invalid authorization in request"}\n', None, id="invalid"),
        pytest.param(
            basic("who", "x"), b'{"message":"Invalid user key in authorization"}\n', None, id="unknown"
        ),
        pytest.param(basic("alex", "x"), b'{"message":"Password is error"}\n', None, id="wrong"),
    ],
)
def test_dependency_answers_like_the_gateway(
    authorization: str | None, body: bytes, challenge: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    http = client(make_app())
    for route in ("/mine", "/mine-sync"):
        response = http.get(route, headers=headers)
        assert response.status_code == 401
        assert response.content == body
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.headers["content-length"] == str(len(body))
        assert response.headers.get("www-authenticate") == challenge
    head = asyncio.run(call_asgi(make_app(), "HEAD", "/mine-or-head", list(headers.items())))
    assert (head.status, head.body, head.headers["content-length"]) == (401, b"", str(len(body)))


def test_dependency_returns_the_consumer_and_sets_request_user() -> None:
    http = client(make_app())
    assert http.get("/mine", headers={"Authorization": ALEX}).json() == {"consumer": "alex"}
    assert http.get("/mine-sync", headers={"Authorization": JACK}).json() == {
        "consumer": "jack",
        "user": "jack",
        "scopes": ["authenticated"],
    }


def test_restricted_dependency() -> None:
    http = client(make_app())
    assert http.get("/alex-only", headers={"Authorization": ALEX}).json() == {"consumer": "alex"}
    forbidden = http.get("/alex-only", headers={"Authorization": JACK})
    assert forbidden.status_code == 403
    assert forbidden.content == b'{"message":"The consumer_name is forbidden."}\n'
    assert http.get("/alex-only").headers["www-authenticate"] == "Basic realm='staff'"


def test_gateway_route_sets_request_user_and_auth() -> None:
    http = client(make_app())
    assert http.get("/routed", headers={"Authorization": ALEX}).json() == {
        "consumer": "alex",
        "user": "alex",
        "authenticated": True,
        "scopes": ["authenticated"],
    }
    assert http.get("/routed").content == b'{"message":"Missing authorization in request"}\n'
    assert http.get("/public").json() == {"consumer": None, "authenticated": False, "scopes": []}


def test_dependency_after_a_route_that_hides_credentials() -> None:
    http = client(make_app())
    assert http.get("/hidden", headers={"Authorization": ALEX}).json() == {
        "consumer": "alex",
        "authorization": None,
    }


def test_websocket_dependency() -> None:
    app = make_app()
    accepted = websocket(app, {"Authorization": ALEX})
    assert [m["type"] for m in accepted] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert accepted[1]["text"] == "alex"
    refused = websocket(app, {})
    assert refused == [{"type": "websocket.close", "code": 1008, "reason": ""}]


def test_slow_hashes_leave_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    verify = Argon2Password.verify

    def recording(self: Argon2Password, password: str) -> bool:
        threads.append(threading.current_thread().name)
        return verify(self, password)

    monkeypatch.setattr(Argon2Password, "verify", recording)
    slow = {
        **GATEWAY,
        "consumers": [
            {
                "username": "alex",
                "plugins": {"basic-auth": {"username": "alex", "password_hash": cheap_argon2("123456")}},
            }
        ],
    }
    http = client(make_app(slow))
    assert http.get("/mine", headers={"Authorization": ALEX}).json() == {"consumer": "alex"}
    assert threads[-1].startswith("consumer-auth-verify")
    assert http.get("/routed", headers={"Authorization": ALEX}).json()["consumer"] == "alex"
    assert threads[-1].startswith("consumer-auth-verify")


def test_without_the_exception_handler_rejections_are_still_http_errors() -> None:
    app = FastAPI()
    app.add_middleware(ConsumerAuthMiddleware, config=GATEWAY)

    @app.get("/mine")
    async def mine(consumer: Annotated[Consumer, Depends(require_consumer)]) -> dict[str, Any]:
        return {"consumer": consumer.username}

    response = client(app).get("/mine")
    assert response.status_code == 401
    assert response.json() == {"detail": "Missing authorization in request"}
    assert response.headers["www-authenticate"] == "Basic realm='.'"


def test_without_the_middleware_the_dependency_says_so() -> None:
    app = FastAPI()

    @app.get("/mine")
    async def mine(consumer: Annotated[Consumer, Depends(require_consumer)]) -> dict[str, Any]:
        return {"consumer": consumer.username}

    with pytest.raises(RuntimeError, match="ConsumerAuthMiddleware is not installed"):
        client(app).get("/mine")


def test_install_accepts_a_gateway_and_rejects_bad_configs() -> None:
    gateway = Gateway.from_dict(GATEWAY)
    app = make_app(gateway)
    assert client(app).get("/mine", headers={"Authorization": ALEX}).json() == {"consumer": "alex"}
    with pytest.raises(ConfigError, match=r"^config\.routes\[0\]\.uri: "):
        install(FastAPI(), {"routes": [{"uri": "json"}]})
    with pytest.raises(ConfigError, match=r"^config: no routes, and unmatched requests are rejected"):
        install(FastAPI(), {"consumers": []})
    with pytest.raises(ConfigError, match=r"^consumers: expected a non-empty list"):
        RequireConsumer(consumers=[])


def test_plain_starlette_app() -> None:
    @requires("authenticated")
    async def secret(request: Any) -> JSONResponse:
        return JSONResponse({"consumer": request.user.display_name})

    async def hello(request: Any) -> JSONResponse:
        return JSONResponse({"authenticated": request.user.is_authenticated})

    app = Starlette(routes=[Route("/secret", secret), Route("/hello", hello)])
    install_starlette(app, {**GATEWAY, "routes": [{"uri": "/secret", "plugins": {"basic-auth": {}}}]})
    http = client(app)
    assert http.get("/secret", headers={"Authorization": ALEX}).json() == {"consumer": "alex"}
    assert http.get("/secret").status_code == 401
    assert http.get("/hello").json() == {"authenticated": False}
