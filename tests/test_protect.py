"""The two-line wrap (SPEC §7) on a real Flask app and a real FastAPI app."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI, Request
from flask import Flask, request

from consumer_auth import CONSUMER_KEY, Consumer, UnsupportedAppError, protect
from consumer_auth._protect import detect_interface
from support import basic, echo_asgi, echo_wsgi

ALEX = Consumer("alex", password="123456")


def flask_app() -> Flask:
    app = Flask(__name__)

    @app.get("/json")
    def json_view() -> dict[str, object]:
        consumer = request.environ[CONSUMER_KEY]
        return {"consumer": consumer.username, "header": request.headers.get("X-Consumer-Username")}

    @app.get("/")
    def index() -> str:
        return "home"

    return app


def test_flask_two_lines() -> None:
    app = flask_app()
    app.wsgi_app = protect(app.wsgi_app, consumers=[ALEX])  # type: ignore[method-assign]
    client = app.test_client()

    missing = client.get("/json")
    assert missing.status_code == 401
    assert missing.data == b'{"message":"Missing authorization in request"}\n'
    assert missing.headers["WWW-Authenticate"] == "Basic realm='.'"
    assert missing.headers["Content-Type"] == "text/plain; charset=utf-8"

    wrong = client.get("/json", headers={"Authorization": basic("alex", "nope")})
    assert (wrong.status_code, wrong.data) == (401, b'{"message":"Password is error"}\n')

    ok = client.get("/json", headers={"Authorization": basic("alex", "123456")})
    assert ok.status_code == 200
    assert ok.json == {"consumer": "alex", "header": "alex"}
    assert client.get("/", headers={"Authorization": basic("alex", "123456")}).data == b"home"
    assert client.get("/anything/else").status_code == 401  # every path is protected


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.get("/json")
    async def json_view(request: Request) -> dict[str, object]:
        return {"consumer": request.user.display_name, "scopes": request.auth.scopes}

    return app


def test_fastapi_two_lines() -> None:
    asyncio.run(_fastapi_two_lines())


async def _fastapi_two_lines() -> None:
    app = protect(fastapi_app(), consumers=[ALEX], profile="apisix-3", realm="api")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        missing = await client.get("/json")
        assert missing.status_code == 401
        assert missing.content == b'{"message":"Missing authorization in request"}\n'
        assert missing.headers["www-authenticate"] == 'Basic realm="api"'

        unknown = await client.get("/json", headers={"Authorization": basic("bob", "x")})
        assert unknown.content == b'{"message":"Invalid user authorization"}\n'

        ok = await client.get("/json", headers={"Authorization": basic("alex", "123456")})
        assert ok.status_code == 200
        assert ok.json() == {"consumer": "alex", "scopes": ["authenticated"]}


def test_detects_interfaces() -> None:
    assert detect_interface(echo_wsgi) == "wsgi"
    assert detect_interface(echo_asgi) == "asgi"
    assert detect_interface(flask_app()) == "wsgi"
    assert detect_interface(flask_app().wsgi_app) == "wsgi"
    assert detect_interface(fastapi_app()) == "asgi"


def test_not_an_app_is_a_clear_error() -> None:
    with pytest.raises(UnsupportedAppError, match="expected a WSGI or ASGI application, got str"):
        protect("app", consumers=[ALEX])  # type: ignore[call-overload]


def test_hide_credentials_and_anonymous() -> None:
    app = flask_app()
    seen: dict[str, object] = {}

    @app.get("/who")
    def who() -> str:
        seen["authorization"] = request.headers.get("Authorization")
        seen["consumer"] = request.environ[CONSUMER_KEY].username
        return "ok"

    guest = Consumer("guest")
    app.wsgi_app = protect(  # type: ignore[method-assign]
        app.wsgi_app, consumers=[ALEX, guest], hide_credentials=True, anonymous_consumer="guest"
    )
    client = app.test_client()
    assert client.get("/who", headers={"Authorization": basic("alex", "123456")}).status_code == 200
    assert seen == {"authorization": None, "consumer": "alex"}
    assert client.get("/who").status_code == 200
    assert seen == {"authorization": None, "consumer": "guest"}
