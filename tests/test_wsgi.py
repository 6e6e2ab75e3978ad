"""WSGI specifics: the service prefix moves to SCRIPT_NAME, the consumer is in the environ."""

from __future__ import annotations

from flask import Flask, request, url_for

from consumer_auth import CONSUMER_KEY, BasicAuthPlugin, Consumer, Gateway, Route, Service
from support import basic, echo_wsgi, wsgi_call


def prefixed_gateway() -> Gateway:
    return Gateway(
        consumers=[Consumer("alex", password="123456")],
        services=[
            Service("app", path_prefix="/v1"),
            Service("raw", path_prefix="/raw", strip_path_prefix=False),
        ],
        routes=[
            Route("/*", service_id="app", plugins=[BasicAuthPlugin()]),
            Route("/*", service_id="raw", plugins=[BasicAuthPlugin()]),
        ],
    )


def test_flask_sees_its_own_paths_under_the_prefix() -> None:
    app = Flask(__name__)

    @app.get("/json")
    def json_view() -> dict[str, str]:
        return {
            "script_name": request.script_root,
            "path": request.path,
            "url": url_for("json_view"),
            "consumer": request.environ[CONSUMER_KEY].username,
        }

    app.wsgi_app = prefixed_gateway().wsgi(app.wsgi_app)  # type: ignore[method-assign]
    response = app.test_client().get("/v1/json", headers={"Authorization": basic("alex", "123456")})
    assert response.status_code == 200
    assert response.json == {"script_name": "/v1", "path": "/json", "url": "/v1/json", "consumer": "alex"}


def test_prefix_kept_when_not_stripped() -> None:
    reply = wsgi_call(
        prefixed_gateway().wsgi(echo_wsgi), "GET", "/raw/json", [("Authorization", basic("alex", "123456"))]
    )
    assert reply.seen()["path"] == "/raw/json"
    assert reply.seen()["mount"] == ""


def test_prefix_only_path() -> None:
    reply = wsgi_call(
        prefixed_gateway().wsgi(echo_wsgi), "GET", "/v1/", [("Authorization", basic("alex", "123456"))]
    )
    assert (reply.seen()["mount"], reply.seen()["path"]) == ("/v1", "/")


def test_normalized_path_is_what_the_app_sees() -> None:
    reply = wsgi_call(
        prefixed_gateway().wsgi(echo_wsgi),
        "GET",
        "/v1/a/../b//c",
        [("Authorization", basic("alex", "123456"))],
    )
    assert reply.seen()["path"] == "/b/c"


def test_utf8_path() -> None:
    gateway = Gateway(routes=[Route("/café")])
    reply = wsgi_call(gateway.wsgi(echo_wsgi), "GET", "/caf%C3%A9", [])
    assert reply.status == 200
