"""The Flask extension: configuration, ``current_consumer``, ``@auth.required`` (the parity table is in
test_conformance.py, mode ``flask``)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, render_template_string

import configs
from consumer_auth import ConfigError, Consumer, Gateway
from consumer_auth.contrib.flask import ConsumerAuth, current_consumer, get_consumer
from consumer_auth.passwords import Argon2Password
from support import basic, cheap_argon2

ALEX = basic("alex", "123456")
OPEN: dict[str, Any] = {
    "consumers": [
        {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}},
        {"username": "jack", "plugins": {"basic-auth": {"username": "jack", "password": "654321"}}},
    ],
    "routes": [{"uri": "/hidden", "plugins": {"basic-auth": {"hide_credentials": True}}}],
    "unmatched": "pass",
}


def make_app(config: object = OPEN) -> tuple[Flask, ConsumerAuth]:
    app = Flask(__name__)
    app.config["CONSUMER_AUTH"] = config
    auth = ConsumerAuth(app)

    @app.get("/public")
    def public() -> dict[str, Any]:
        consumer = get_consumer()
        return {"consumer": consumer.username if consumer else None}

    @app.get("/hidden")
    @auth.required
    def hidden() -> dict[str, Any]:
        from flask import request

        return {"consumer": current_consumer.username, "authorization": request.headers.get("Authorization")}

    @app.get("/mine")
    @auth.required
    def mine() -> dict[str, str]:
        return {"consumer": current_consumer.username}

    @app.get("/alex-only")
    @auth.required(consumers=["alex"], realm="staff")
    def alex_only() -> dict[str, str]:
        return {"consumer": current_consumer.username}

    @app.get("/async")
    @auth.required
    async def asynchronous() -> dict[str, str]:
        return {"consumer": current_consumer.username, "thread": threading.current_thread().name}

    @app.get("/template")
    @auth.required
    def template() -> str:
        return render_template_string("hello {{ current_consumer.username }}")

    return app, auth


def test_gateway_route_sets_the_consumer_for_views() -> None:
    app, _ = make_app(configs.CONFIGS["apisix"])

    @app.get("/hello")
    def hello() -> dict[str, Any]:
        return {"consumer": current_consumer.username}

    client = app.test_client()
    assert client.get("/hello", headers={"Authorization": basic("foo", "bar")}).get_json() == {
        "consumer": "foo"
    }
    rejected = client.get("/hello")
    assert rejected.status_code == 401
    assert rejected.data == b'{"message":"Missing authorization in request"}\n'
    assert rejected.headers["WWW-Authenticate"] == "Basic realm='.'"


def test_required_view_reads_the_current_consumer() -> None:
    client = make_app()[0].test_client()
    assert client.get("/mine", headers={"Authorization": ALEX}).get_json() == {"consumer": "alex"}
    assert client.get("/public").get_json() == {"consumer": None}
    assert client.get("/template", headers={"Authorization": ALEX}).data == b"hello alex"


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
def test_required_answers_like_the_gateway(
    authorization: str | None, body: bytes, challenge: str | None
) -> None:
    client = make_app()[0].test_client()
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = client.get("/mine", headers=headers)
    assert response.status_code == 401
    assert response.data == body
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Content-Length"] == str(len(body))
    assert response.headers.get("WWW-Authenticate") == challenge


def test_required_with_consumers_restricts() -> None:
    client = make_app()[0].test_client()
    assert client.get("/alex-only", headers={"Authorization": ALEX}).get_json() == {"consumer": "alex"}
    forbidden = client.get("/alex-only", headers={"Authorization": basic("jack", "654321")})
    assert forbidden.status_code == 403
    assert forbidden.data == b'{"message":"The consumer_name is forbidden."}\n'
    missing = client.get("/alex-only")
    assert missing.headers["WWW-Authenticate"] == "Basic realm='staff'"


def test_required_does_not_authenticate_again_after_a_route() -> None:
    # The route hides the credentials; the view's guard takes the route's consumer instead of failing.
    client = make_app()[0].test_client()
    response = client.get("/hidden", headers={"Authorization": ALEX})
    assert response.get_json() == {"consumer": "alex", "authorization": None}


def test_required_on_an_async_view_verifies_slow_hashes_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    verify = Argon2Password.verify

    def recording(self: Argon2Password, password: str) -> bool:
        threads.append(threading.current_thread().name)
        return verify(self, password)

    monkeypatch.setattr(Argon2Password, "verify", recording)
    config = {
        "consumers": [
            {
                "username": "alex",
                "plugins": {"basic-auth": {"username": "alex", "password_hash": cheap_argon2("123456")}},
            }
        ],
        "unmatched": "pass",
        "verification_cache": {"max_entries": 0},  # every request verifies: the test watches where
    }
    client = make_app(config)[0].test_client()
    reply = client.get("/async", headers={"Authorization": ALEX}).get_json()
    assert reply["consumer"] == "alex"
    assert threads[-1].startswith("consumer-auth-verify")  # not the thread running the view's event loop
    assert threads[-1] != reply["thread"]
    assert client.get("/async", headers={"Authorization": basic("alex", "nope")}).status_code == 401
    assert client.get("/mine", headers={"Authorization": ALEX}).get_json() == {"consumer": "alex"}
    assert threads[-1] == threading.current_thread().name  # a sync view verifies in its own thread


def test_guards_see_consumers_replaced_at_run_time() -> None:
    app, auth = make_app()
    client = app.test_client()
    assert client.get("/mine", headers={"Authorization": ALEX}).status_code == 200
    with app.app_context():
        auth.gateway.replace_consumers([Consumer("jack", password="654321")])
    assert (
        client.get("/mine", headers={"Authorization": ALEX}).data
        == b'{"message":"Invalid user key in authorization"}\n'
    )
    assert client.get("/mine", headers={"Authorization": basic("jack", "654321")}).status_code == 200


def test_init_app_sets_up_several_apps(tmp_path: Path) -> None:
    auth = ConsumerAuth()
    first, second = Flask("first"), Flask("second")
    first.config["CONSUMER_AUTH"] = OPEN
    config_file = tmp_path / "gateway.json"
    config_file.write_text(
        '{"consumers": [{"username": "jack", "plugins": {"basic-auth": {"username": "jack", "password": "654321"}}}], "unmatched": "pass"}'
    )
    second.config["CONSUMER_AUTH"] = str(config_file)
    for app in (first, second):
        auth.init_app(app)

        @app.get("/mine")
        @auth.required
        def mine() -> dict[str, str]:
            return {"consumer": current_consumer.username}

    assert first.test_client().get("/mine", headers={"Authorization": ALEX}).status_code == 200
    assert second.test_client().get("/mine", headers={"Authorization": ALEX}).status_code == 401
    assert (
        second.test_client().get("/mine", headers={"Authorization": basic("jack", "654321")}).status_code
        == 200
    )
    with pytest.raises(RuntimeError, match="already set up"):
        auth.init_app(first)


def test_explicit_config_overrides_app_config() -> None:
    gateway = Gateway.from_dict(OPEN)
    app = Flask(__name__)
    app.config["CONSUMER_AUTH"] = "ignored.yaml"
    auth = ConsumerAuth(app, config=gateway)
    with app.app_context():
        assert auth.gateway is gateway


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(None, "CONSUMER_AUTH: not set", id="missing"),
        pytest.param(
            42, "CONSUMER_AUTH: expected a configuration mapping, a file path or a Gateway, got 42", id="type"
        ),
        pytest.param(
            {"routes": [{"uri": "/x", "plugins": {"basic-auth": {"hide_credentials": "yes"}}}]},
            "CONSUMER_AUTH.routes[0].plugins.basic-auth.hide_credentials: expected a boolean, got 'yes'",
            id="mapping",
        ),
        pytest.param(
            {"consumers": []},
            "CONSUMER_AUTH: no routes, and unmatched requests are rejected",
            id="unreachable",
        ),
    ],
)
def test_bad_settings_name_the_place(value: object, message: str) -> None:
    app = Flask(__name__)
    if value is not None:
        app.config["CONSUMER_AUTH"] = value
    with pytest.raises(ConfigError) as raised:
        ConsumerAuth(app)
    assert str(raised.value).startswith(message)
    assert not hasattr(app.wsgi_app, "gateway")


def test_bad_file_names_the_file_and_the_place(tmp_path: Path) -> None:
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(
        "consumers:\n  - username: alex\n    plugins: {basic-auth: {username: alex, password: ''}}\nunmatched: pass\n"
    )
    app = Flask(__name__)
    app.config["CONSUMER_AUTH"] = config_file
    with pytest.raises(ConfigError) as raised:
        ConsumerAuth(app)
    assert str(raised.value).startswith(f"{config_file}: consumers[0]")
    assert "password" in str(raised.value)
    missing = tmp_path / "missing.yaml"
    app.config["CONSUMER_AUTH"] = missing
    with pytest.raises(ConfigError, match="cannot read the file"):
        ConsumerAuth(app)


def test_required_rejects_bad_arguments_at_decoration() -> None:
    auth = ConsumerAuth()
    with pytest.raises(ConfigError, match=r"^consumers: expected a non-empty list"):
        auth.required(consumers=[])
    with pytest.raises(ConfigError, match=r"^realm:"):
        auth.required(realm='say "hi"')


def test_required_without_the_extension_is_a_clear_error() -> None:
    app = Flask(__name__)
    auth = ConsumerAuth()

    @app.get("/mine")
    @auth.required
    def mine() -> str:
        return "unreachable"

    app.testing = True
    with pytest.raises(RuntimeError, match="not set up on this app"):
        app.test_client().get("/mine")


def test_stripped_prefix_mounts_the_app_like_script_name() -> None:
    app = Flask(__name__)
    app.config["CONSUMER_AUTH"] = configs.CONFIGS["guide"]
    ConsumerAuth(app)

    @app.get("/json")
    def json_document() -> dict[str, str]:
        from flask import request, url_for

        return {
            "consumer": current_consumer.username,
            "url": url_for("json_document"),
            "root": request.script_root,
        }

    response = app.test_client().get("/v1/json", headers={"Host": "example.com", "Authorization": ALEX})
    assert response.get_json() == {"consumer": "alex", "url": "/v1/json", "root": "/v1"}


def test_a_store_url_in_the_setting(tmp_path: Path) -> None:
    from consumer_auth.store import SQLStore

    url = f"sqlite:///{tmp_path / 'consumers.db'}"
    store = SQLStore(url)
    store.put_resource(
        "consumers", "alex", {"plugins": {"basic-auth": {"username": "alex", "password": "123456"}}}
    )
    app = Flask(__name__)
    app.config["CONSUMER_AUTH"] = {"store": url, "routes": [{"uri": "/json", "plugins": {"basic-auth": {}}}]}
    auth = ConsumerAuth(app)

    @app.get("/json")
    def json_view() -> str:
        consumer = get_consumer()
        return consumer.username if consumer else "-"

    client = app.test_client()
    with app.app_context():
        gateway = auth.gateway
    try:
        assert client.get("/json", headers={"Authorization": basic("alex", "123456")}).data == b"alex"
        store.put_resource(
            "consumers", "jack", {"plugins": {"basic-auth": {"username": "jack", "password": "x"}}}
        )
        assert gateway.watcher is not None
        gateway.watcher.check()  # what its thread does every second
        assert client.get("/json", headers={"Authorization": basic("jack", "x")}).data == b"jack"
    finally:
        gateway.close()
        store.close()
    other = Flask("other")
    other.config["CONSUMER_AUTH"] = {"store": "django", "routes": []}  # Django's own store type
    with pytest.raises(ConfigError, match=r"CONSUMER_AUTH\.store: expected a store URL"):
        ConsumerAuth(other)
