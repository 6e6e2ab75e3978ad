"""SPEC §8 and §8a against real servers and frameworks: the requests a hostile client sends.

Each test sends what a client can send on a raw socket (a target without ``/``, a ``#`` fragment, a
lower-case method, ``%0A``, ``..;``, a foreign ``Host``) to a real server (werkzeug, uvicorn with h11,
which passes targets on as hypercorn and daphne do, uvicorn with httptools, ``consumer-auth serve``) in
front of a real framework (Flask, Starlette, FastAPI, Django), and checks that the guarded view never
runs without credentials while public paths still pass.
"""

from __future__ import annotations

import asyncio
import copy
import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
import yaml
from fastapi import Depends, FastAPI

import configs
import proxy_servers
from consumer_auth import Consumer
from consumer_auth.contrib.fastapi import require_consumer
from support import basic, call_asgi, wsgi_call

ALEX = basic("alex", "123456")
MISSING = b'{"message":"Missing authorization in request"}\n'
BAD_REQUEST = b'{"error_msg":"400 Bad Request"}\n'
NOT_FOUND = b'{"error_msg":"404 Route Not Found"}\n'


def raw_request(port: int, head: bytes) -> tuple[int, bytes]:
    """Send a request head exactly as given (``Connection: close`` added) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + b"\r\nConnection: close\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()


def view_of(body: bytes) -> tuple[str | None, str | None]:
    document = json.loads(body)
    return document.get("view"), document.get("consumer")


# -- the apps ---------------------------------------------------------------------------------------------


def flask_app(config: dict[str, Any] | None) -> Any:
    """Flask views at the PATHS routes' paths; the gateway set up with ``ConsumerAuth`` unless ``None``."""
    from flask import Flask, jsonify

    from consumer_auth.contrib.flask import ConsumerAuth, current_consumer, get_consumer

    app = Flask(f"paths_{id(config)}")
    methods = ["GET", "HEAD", "POST", "PUT"]

    def answer(view: str) -> Any:
        consumer = get_consumer()
        return jsonify(view=view, consumer=consumer.username if consumer else None)

    app.add_url_rule("/v1/admin", "admin", lambda: answer("admin"), methods=methods)
    app.add_url_rule("/v1/admin/<path:rest>", "admin_rest", lambda rest: answer("admin"), methods=methods)
    app.add_url_rule("/v1/get-only", "get_only", lambda: answer("get-only"), methods=methods)
    app.add_url_rule("/v1/pub/<path:rest>", "pub", lambda rest: answer("pub"), methods=methods)
    if config is not None:
        app.config["CONSUMER_AUTH"] = config
        auth = ConsumerAuth(app)

        @app.get("/v1/anon")
        @auth.required
        def anon() -> Any:
            return answer("anon")

        @app.get("/json")  # docs/flask.md: the view of service /v1 + route json
        def json_view() -> Any:
            return {"view": "json", "consumer": current_consumer.username}

    return app


def starlette_app(config: dict[str, Any]) -> Any:
    from starlette.applications import Starlette
    from starlette.authentication import requires
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from consumer_auth.contrib.starlette import install

    def view(name: str) -> Any:
        async def endpoint(request: Request) -> JSONResponse:
            user = request.scope.get("user")
            return JSONResponse(
                {
                    "view": name,
                    "consumer": getattr(user, "username", None),
                    "authenticated": request.user.is_authenticated,
                    "scopes": request.auth.scopes,
                }
            )

        return endpoint

    methods = ["GET", "POST", "PUT"]
    app = Starlette(
        routes=[
            Route("/v1/admin", view("admin"), methods=methods),
            Route("/v1/admin/{rest:path}", view("admin"), methods=methods),
            Route("/v1/get-only", view("get-only"), methods=methods),
            Route("/v1/anon", requires("authenticated")(view("anon"))),
            Route("/v1/anon-open", view("anon-open")),
        ]
    )
    install(app, config)
    return app


def fastapi_app(config: dict[str, Any]) -> Any:
    from consumer_auth.contrib.fastapi import install

    app = FastAPI(openapi_url=None)
    install(app, config)

    @app.get("/v1/admin")
    async def admin() -> dict[str, str]:
        return {"view": "admin"}

    @app.get("/v1/anon")
    async def anon(consumer: Annotated[Consumer, Depends(require_consumer)]) -> dict[str, str]:
        return {"view": "anon", "consumer": consumer.username}

    return app


def with_anon_open(config: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(config)
    document["routes"].append(
        {"uri": "/v1/anon-open", "plugins": {"basic-auth": {"anonymous_consumer": "guest"}}}
    )
    return document


# -- item 1: targets without "/", fragments; item 3: lower-case methods -------------------------------------


@pytest.fixture(scope="module")
def flask_on_werkzeug() -> int:
    return proxy_servers.WSGIServer(flask_app(configs.CONFIGS["paths-pass"])).port


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"GET v1/admin/x HTTP/1.1", id="no-leading-slash"),
        pytest.param(b"GET v1/admin HTTP/1.1", id="no-leading-slash-exact"),
        pytest.param(b"GET /v1/admin#/x HTTP/1.1", id="fragment"),
        pytest.param(b"get /v1/get-only HTTP/1.1", id="lower-case-method"),
        pytest.param(b"GET /v1/admin;x=1/x HTTP/1.1", id="servlet-params"),
        pytest.param(b"GET /v1/admin\\x HTTP/1.1", id="backslash"),
    ],
)
def test_flask_on_werkzeug_never_runs_a_guarded_view_without_credentials(
    flask_on_werkzeug: int, head: bytes
) -> None:
    assert raw_request(flask_on_werkzeug, head + b"\r\nHost: example.com") == (401, MISSING)


def test_flask_on_werkzeug_serves_the_path_without_slash_as_authorized(flask_on_werkzeug: int) -> None:
    status, body = raw_request(
        flask_on_werkzeug, b"GET v1/admin/x HTTP/1.1\r\nHost: example.com\r\nAuthorization: " + ALEX.encode()
    )
    assert (status, view_of(body)) == (200, ("admin", "alex"))
    status, body = raw_request(flask_on_werkzeug, b"GET v1/pub/x HTTP/1.1\r\nHost: example.com")
    assert (status, view_of(body)) == (200, ("pub", None))


@pytest.fixture(scope="module")
def starlette_on_h11() -> int:
    return proxy_servers.ASGIServer(starlette_app(configs.CONFIGS["paths-pass"]), http="h11").port


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"GET v1/admin/x HTTP/1.1", id="no-leading-slash"),
        pytest.param(b"GET /v1/admin#/x HTTP/1.1", id="fragment"),
        pytest.param(b"get /v1/get-only HTTP/1.1", id="lower-case-method"),
        pytest.param(b"GET /v1/admin;x=1 HTTP/1.1", id="servlet-params"),
    ],
)
def test_starlette_on_h11_never_runs_a_guarded_view_without_credentials(
    starlette_on_h11: int, head: bytes
) -> None:
    assert raw_request(starlette_on_h11, head + b"\r\nHost: example.com") == (401, MISSING)


def test_starlette_on_h11_sees_the_path_it_was_authorized_for(starlette_on_h11: int) -> None:
    status, body = raw_request(
        starlette_on_h11, b"GET v1/admin/x HTTP/1.1\r\nHost: example.com\r\nAuthorization: " + ALEX.encode()
    )
    assert (status, view_of(body)) == (200, ("admin", "alex"))


def test_django_asgi_on_h11_matches_a_lower_case_method(tmp_path: Path) -> None:
    from django.core.handlers.asgi import ASGIHandler
    from django.test import override_settings

    with override_settings(ROOT_URLCONF="django_path_urls", CONSUMER_AUTH=configs.CONFIGS["paths-pass"]):
        port = proxy_servers.ASGIServer(ASGIHandler(), http="h11", lifespan="off").port
        assert raw_request(port, b"get /v1/get-only HTTP/1.1\r\nHost: example.com") == (401, MISSING)
        status, body = raw_request(
            port, b"get /v1/get-only HTTP/1.1\r\nHost: example.com\r\nAuthorization: " + ALEX.encode()
        )
        assert (status, view_of(body)) == (200, ("get-only", "alex"))


@pytest.fixture(scope="module")
def flask_upstream() -> str:
    """A plain Flask app (no gateway) on werkzeug: the upstream a proxy guards."""
    return f"http://127.0.0.1:{proxy_servers.WSGIServer(flask_app(None)).port}"


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize(
    ("head", "authorized"),
    [
        pytest.param(b"GET v1/admin/x HTTP/1.1", (200, ("admin", None)), id="no-leading-slash"),
        pytest.param(b"GET /v1/admin#/x HTTP/1.1", (200, ("admin", None)), id="fragment"),
        pytest.param(b"GET /v1/admin;x=1/x HTTP/1.1", (404, None), id="servlet-params"),
    ],
)
def test_proxies_never_forward_to_a_guarded_view_without_credentials(
    flask_upstream: str, kind: str, head: bytes, authorized: tuple[int, Any]
) -> None:
    from consumer_auth import Gateway

    gateway = Gateway.from_dict(configs.CONFIGS["paths-pass"])
    if kind == "asgi":
        port = proxy_servers.ASGIServer(gateway.asgi_proxy(upstream=flask_upstream), http="h11").port
    else:
        port = proxy_servers.WSGIServer(gateway.wsgi_proxy(upstream=flask_upstream)).port
    assert raw_request(port, head + b"\r\nHost: example.com") == (401, MISSING)
    # With credentials the upstream gets the path that was authorized (no fragment, a leading "/");
    # the plain Flask upstream sees no consumer object (only the X-Consumer-Username header).
    status, body = raw_request(port, head + b"\r\nHost: example.com\r\nAuthorization: " + ALEX.encode())
    assert (status, view_of(body) if status == 200 else None) == authorized


# -- item 12: a trailing %0A ----------------------------------------------------------------------------------


def test_fastapi_on_uvicorn_refuses_a_trailing_newline() -> None:
    port = proxy_servers.ASGIServer(fastapi_app(configs.CONFIGS["paths-pass"])).port
    assert raw_request(port, b"GET /v1/admin%0A HTTP/1.1\r\nHost: example.com") == (400, BAD_REQUEST)
    assert raw_request(port, b"GET /v1/pub/x%0a HTTP/1.1\r\nHost: example.com") == (400, BAD_REQUEST)
    status, body = raw_request(
        port, b"GET /v1/admin HTTP/1.1\r\nHost: example.com\r\nAuthorization: " + ALEX.encode()
    )
    assert (status, json.loads(body)) == (200, {"view": "admin"})


def test_asgi_proxy_refuses_a_trailing_newline_to_a_starlette_upstream() -> None:
    from consumer_auth import Gateway

    upstream = f"http://127.0.0.1:{proxy_servers.ASGIServer(fastapi_app(configs.MOUNTED)).port}"
    proxy = Gateway.from_dict(configs.CONFIGS["paths-pass"]).asgi_proxy(upstream=upstream)
    port = proxy_servers.ASGIServer(proxy).port
    assert raw_request(port, b"GET /v1/admin%0A HTTP/1.1\r\nHost: example.com") == (400, BAD_REQUEST)


# -- items 3, 4, 6, 8 through consumer-auth serve ---------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    upstream = proxy_servers.start_upstream(proxy_servers.echo, "paths-echo")
    path = tmp_path_factory.mktemp("serve") / "gateway.yaml"
    path.write_text(yaml.safe_dump(configs.CONFIGS["paths-pass"]))
    process = proxy_servers.Process(
        [
            proxy_servers.CONSUMER_AUTH,
            "serve",
            "--config",
            str(path),
            "--upstream",
            upstream.url,
            "--port",
            "0",
        ]
    )
    try:
        yield process.uvicorn_port()
    finally:
        process.terminate()


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        pytest.param(b"GET /v1/hosted/x HTTP/1.1\r\nHost: other.com", (404, NOT_FOUND), id="other-host"),
        pytest.param(b"GET /v1/hosted/x HTTP/1.0", (404, NOT_FOUND), id="no-host"),
        pytest.param(b"GET /v1/hosted/x HTTP/1.1\r\nHost: example.com", (401, MISSING), id="host"),
        pytest.param(
            b"POST /v1/get-only HTTP/1.1\r\nHost: x\r\nContent-Length: 0", (404, NOT_FOUND), id="post"
        ),
        pytest.param(
            b"PUT /v1/get-only HTTP/1.1\r\nHost: x\r\nContent-Length: 0", (404, NOT_FOUND), id="put"
        ),
        pytest.param(b"GET /v1/admin;x=1/x HTTP/1.1\r\nHost: x", (401, MISSING), id="params"),
        pytest.param(b"GET /v1;a/admin/x HTTP/1.1\r\nHost: x", (401, MISSING), id="params-on-prefix"),
        pytest.param(b"GET /v1/admin%00 HTTP/1.1\r\nHost: x", (400, BAD_REQUEST), id="nul"),
        pytest.param(b"GET /v1/admin%2e HTTP/1.1\r\nHost: x", (401, MISSING), id="trailing-dot"),
        pytest.param(b"GET /v1/admin;/x HTTP/1.1\r\nHost: x", (401, MISSING), id="params-segment"),
        pytest.param(b"GET /v1/admin%5cx HTTP/1.1\r\nHost: x", (401, MISSING), id="backslash"),
        pytest.param(
            b"GET /v1/pub/..;/admin/x HTTP/1.1\r\nHost: x", (400, BAD_REQUEST), id="dotdot-semicolon"
        ),
        pytest.param(b"GET /v1/pub/%2e%2e;/admin/x HTTP/1.1\r\nHost: x", (400, BAD_REQUEST), id="dotdot-enc"),
        pytest.param(b"GET /v1/pub/..%3b/admin/x HTTP/1.1\r\nHost: x", (400, BAD_REQUEST), id="dotdot-3b"),
        pytest.param(b"GET /v1/pub/..%5cadmin%5cx HTTP/1.1\r\nHost: x", (400, BAD_REQUEST), id="dotdot-5c"),
        pytest.param(
            b"GET /v1/pub/%2e%2e%5cadmin HTTP/1.1\r\nHost: x", (400, BAD_REQUEST), id="dotdot-enc-5c"
        ),
        pytest.param(b"GET /v1/pub/%252e%252e/admin/x HTTP/1.1\r\nHost: x", (400, BAD_REQUEST), id="double"),
        pytest.param(b"GET /v1/admin%0A HTTP/1.1\r\nHost: x", (400, BAD_REQUEST), id="newline"),
    ],
)
def test_serve_decides_ambiguous_requests(served: int, head: bytes, expected: tuple[int, bytes]) -> None:
    assert raw_request(served, head) == expected


def test_serve_passes_public_and_unrouted_paths(served: int) -> None:
    for target in (b"/v1/pub/x", b"/v1/pub/file.txt", b"/health"):
        status, body = raw_request(served, b"GET " + target + b" HTTP/1.1\r\nHost: x")
        assert status == 200, target
        assert json.loads(body)["target"] == target.decode()


def test_serve_drops_the_failed_login_of_an_anonymous_request(served: int) -> None:
    bad = basic("alex", "bad").encode()
    status, body = raw_request(served, b"GET /v1/anon HTTP/1.1\r\nHost: x\r\nAuthorization: " + bad)
    seen = json.loads(body)
    assert (status, seen["consumer"]) == (200, "guest")
    assert "authorization" not in {name.lower() for name in seen["headers"]}


def test_check_warns_about_hosts_and_methods_under_unmatched_pass(tmp_path: Path) -> None:
    import subprocess

    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(configs.CONFIGS["paths-pass"]))
    done = subprocess.run(
        [proxy_servers.CONSUMER_AUTH, "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert (
        "warning: routes[2] 'hosted' has hosts under unmatched: pass: requests for its paths on other "
        "hosts are answered 404 Route Not Found, not passed on (a client chooses its Host)"
    ) in done.stdout
    assert (
        "warning: routes[3] 'get-only' has methods under unmatched: pass: requests for its paths with "
        "other methods are answered 404 Route Not Found, not passed on"
    ) in done.stdout
    path.write_text(yaml.safe_dump(configs.CONFIGS["paths"]))
    quiet = subprocess.run(
        [proxy_servers.CONSUMER_AUTH, "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "warning" not in quiet.stdout


# -- item 7: anonymous is not authenticated --------------------------------------------------------------------


@pytest.mark.parametrize("credentials", [None, basic("alex", "bad")], ids=["none", "wrong-password"])
def test_flask_auth_required_asks_an_anonymous_request_for_credentials(credentials: str | None) -> None:
    app = flask_app(configs.CONFIGS["paths"])
    headers = [("Authorization", credentials)] if credentials else []
    reply = wsgi_call(app.wsgi_app, "GET", "/v1/anon", headers)
    assert (reply.status, reply.body) == (401, MISSING)
    reply = wsgi_call(app.wsgi_app, "GET", "/v1/anon", [("Authorization", ALEX)])
    assert (reply.status, view_of(reply.body)) == (200, ("anon", "alex"))


def test_starlette_anonymous_is_not_authenticated() -> None:
    app = starlette_app(with_anon_open(configs.CONFIGS["paths"]))
    reply = asyncio.run(call_asgi(app, "GET", "/v1/anon-open", [("Authorization", basic("alex", "bad"))]))
    seen = json.loads(reply.body)
    assert seen == {"view": "anon-open", "consumer": "guest", "authenticated": False, "scopes": []}
    reply = asyncio.run(call_asgi(app, "GET", "/v1/anon", []))
    assert reply.status == 403  # @requires("authenticated"): Starlette's own answer
    reply = asyncio.run(call_asgi(app, "GET", "/v1/anon", [("Authorization", ALEX)]))
    assert json.loads(reply.body)["authenticated"] is True


def test_fastapi_require_consumer_asks_an_anonymous_request_for_credentials() -> None:
    app = fastapi_app(configs.CONFIGS["paths"])
    reply = asyncio.run(call_asgi(app, "GET", "/v1/anon", []))
    assert (reply.status, reply.body) == (401, MISSING)
    reply = asyncio.run(call_asgi(app, "GET", "/v1/anon", [("Authorization", ALEX)]))
    assert json.loads(reply.body) == {"view": "anon", "consumer": "alex"}


@pytest.mark.parametrize("asynchronous", [False, True], ids=["wsgi", "asgi"])
def test_django_consumer_required_asks_an_anonymous_request_for_credentials(asynchronous: bool) -> None:
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import override_settings

    with override_settings(ROOT_URLCONF="django_path_urls", CONSUMER_AUTH=configs.CONFIGS["paths"]):
        for headers, expected in (([], 401), ([("Authorization", ALEX)], 200)):
            if asynchronous:
                reply = asyncio.run(call_asgi(ASGIHandler(), "GET", "/v1/anon", headers))
            else:
                reply = wsgi_call(WSGIHandler(), "GET", "/v1/anon", headers)
            assert reply.status == expected, reply.body
            if expected == 401:
                assert reply.body == MISSING


def test_the_anonymous_consumer_object_is_not_authenticated() -> None:
    from consumer_auth import Gateway
    from consumer_auth.consumers import AnonymousConsumer
    from consumer_auth.decision import Allow, RequestFacts

    gateway = Gateway.from_dict(configs.CONFIGS["paths"])
    decision = gateway.decide_now(RequestFacts("GET", "/v1/anon", authorization=(basic("alex", "x"),)))
    assert isinstance(decision, Allow)
    assert isinstance(decision.consumer, AnonymousConsumer)
    assert (decision.consumer.username, decision.consumer.is_authenticated) == ("guest", False)
    assert decision.hide_credentials  # the login that failed does not go on
    assert decision.identity_headers == (("x-consumer-username", "guest"),)
    authenticated = gateway.decide_now(RequestFacts("GET", "/v1/anon", authorization=(ALEX,)))
    assert isinstance(authenticated, Allow)
    assert authenticated.consumer is not None
    assert authenticated.consumer.is_authenticated
    assert not authenticated.hide_credentials


# -- item 11: the stripped prefix in-process --------------------------------------------------------------------


def test_flask_view_below_a_stripped_prefix_is_guarded_at_its_own_path() -> None:
    app = flask_app(configs.MOUNTED)
    reply = wsgi_call(app.wsgi_app, "GET", "/json", [])
    assert (reply.status, reply.body) == (401, MISSING)  # was: the view ran and answered 500
    for path in ("/json", "/v1/json"):
        reply = wsgi_call(app.wsgi_app, "GET", path, [("Authorization", ALEX)])
        assert (reply.status, json.loads(reply.body)) == (200, {"view": "json", "consumer": "alex"}), path


@pytest.mark.parametrize("asynchronous", [False, True], ids=["wsgi", "asgi"])
def test_django_view_below_a_stripped_prefix_is_guarded_at_its_own_path(asynchronous: bool) -> None:
    from django.core.handlers.asgi import ASGIHandler
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import override_settings

    with override_settings(ROOT_URLCONF="django_path_urls", CONSUMER_AUTH=configs.MOUNTED):
        for path, headers, expected in (
            ("/json", [], 401),
            ("/json", [("Authorization", ALEX)], 200),
            ("/v1/json", [("Authorization", ALEX)], 200),
            ("/v1/json", [], 401),
        ):
            if asynchronous:
                reply = asyncio.run(call_asgi(ASGIHandler(), "GET", path, headers))
            else:
                reply = wsgi_call(WSGIHandler(), "GET", path, headers)
            assert reply.status == expected, (path, reply.body)
            if expected == 200:
                assert view_of(reply.body) == ("mounted-json", "alex")
