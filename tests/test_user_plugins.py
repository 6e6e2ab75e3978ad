"""The user plugins of docs/plugins.md, from Python and from a YAML file, in every mode (SPEC §9)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from example_plugins import AddResponseHeader, RequireHeader

import configs
import proxy_modes
import proxy_servers
from consumer_auth import BasicAuthPlugin, ConfigError, Consumer, Gateway, Route, Service
from support import Headers, Mode, Reply, basic, call_asgi, echo_asgi, echo_wsgi, wsgi_call

DOCS = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "plugins" / "example_plugins.py"
ALEX = ("Authorization", basic("alex", "123456"))
BOB = ("Authorization", basic("bob", "654321"))
ACME = ("X-Tenant", "acme")
MISSING = b'{"message":"Missing or invalid X-Tenant header"}\n'

# (headers, status, body or None for the app's answer, the X-Plan header expected)
ROWS = [
    pytest.param([], 400, MISSING, None, id="no-header-no-credentials"),
    pytest.param([ALEX], 400, MISSING, None, id="no-header"),
    pytest.param([ALEX, ("X-Tenant", "other")], 400, MISSING, None, id="wrong-tenant"),
    pytest.param([ACME], 401, b'{"message":"Missing authorization in request"}\n', None, id="no-credentials"),
    pytest.param([ACME, ALEX], 200, None, "gold", id="consumer-plugin-replaces-service-plugin"),
    pytest.param([ACME, BOB], 200, None, "free", id="service-plugin"),
]


def python_gateway(upstream: str) -> Gateway:
    """The configuration of ``configs.USER_PLUGINS``, written in Python."""
    return Gateway(
        consumers=[
            Consumer("alex", password="123456", plugins=[AddResponseHeader("X-Plan", "gold")]),
            Consumer("bob", password="654321"),
        ],
        services=[Service("tenants", upstream=upstream, plugins=[AddResponseHeader("X-Plan", "free")])],
        routes=[
            Route(
                "/tenant",
                service_id="tenants",
                plugins=[BasicAuthPlugin(), RequireHeader("X-Tenant", values=("acme",))],
            )
        ],
    )


def yaml_gateway(upstream: str, tmp_path: Path) -> Gateway:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(proxy_modes.proxied_document(configs.USER_PLUGINS, upstream)))
    return Gateway.from_file(path)


Send = Callable[[str, str, Headers], Reply]


def adapter(kind: str, gateway: Gateway, upstream: str) -> Send:
    if kind == "wsgi":
        app = gateway.wsgi(echo_wsgi)
        return lambda method, path, headers: wsgi_call(app, method, path, headers)
    if kind == "asgi":
        asgi_app = gateway.asgi(echo_asgi)
        return lambda method, path, headers: asyncio.run(call_asgi(asgi_app, method, path, headers))
    if kind == "asgi-proxy":
        port = proxy_servers.ASGIServer(gateway.asgi_proxy(upstream=upstream)).port
    else:
        port = proxy_servers.WSGIServer(gateway.wsgi_proxy(upstream=upstream)).port
    return lambda method, path, headers: proxy_servers.request(port, method, path, headers)


def check(reply: Reply, status: int, body: bytes | None, plan: str | None) -> None:
    assert reply.status == status, reply.body
    if body is not None:
        assert reply.body == body
    else:
        assert b'"consumer"' in reply.body  # the echo app or upstream answered
    assert reply.headers.get("x-plan") == plan


KINDS = ["wsgi", "asgi", "asgi-proxy", "wsgi-proxy"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("source", ["python", "yaml"])
def test_user_plugins_from_python_and_yaml_in_each_adapter(source: str, kind: str, tmp_path: Path) -> None:
    upstream = proxy_modes.echo_upstream().url
    gateway = python_gateway(upstream) if source == "python" else yaml_gateway(upstream, tmp_path)
    send = adapter(kind, gateway, upstream)
    for row in ROWS:
        headers, status, body, plan = row.values
        check(send("GET", "/tenant", headers), status, body, plan)  # type: ignore[arg-type]


@pytest.fixture
def user_plugins_config() -> Iterator[str]:
    configs.CONFIGS["user-plugins"] = configs.USER_PLUGINS
    yield "user-plugins"
    del configs.CONFIGS["user-plugins"]


@pytest.mark.parametrize(("headers", "status", "body", "plan"), ROWS)
def test_user_plugins_in_every_mode(
    mode: Mode, user_plugins_config: str, headers: Headers, status: int, body: bytes | None, plan: str | None
) -> None:
    check(mode.request(user_plugins_config, "GET", "/tenant", headers), status, body, plan)


@pytest.mark.parametrize(
    ("plugins", "message"),
    [
        pytest.param(
            {"example_plugins:RequireHeader": {"header": 3}},
            "routes[0].plugins.example_plugins:RequireHeader.header: expected a header name",
            id="bad-value",
        ),
        pytest.param(
            {"example_plugins:RequireHeader": {"headr": "X-Tenant"}},
            "routes[0].plugins.example_plugins:RequireHeader.headr: unknown key",
            id="unknown-key",
        ),
        pytest.param(
            {"example_plugins:RequireHeader": {}},
            "routes[0].plugins.example_plugins:RequireHeader.header: required",
            id="missing-key",
        ),
        pytest.param(
            {"example_plugins.RequireHeader": {"header": "X-Tenant", "rejected_code": 200}},
            "routes[0].plugins.example_plugins.RequireHeader.rejected_code: expected a 4xx status",
            id="dotted-with-a-dot",
        ),
        pytest.param(
            {"no_such_module:Plugin": {}},
            "routes[0].plugins.no_such_module:Plugin: cannot import module 'no_such_module'",
            id="no-module",
        ),
        pytest.param(
            {"example_plugins:ConfigError": {}},
            "routes[0].plugins.example_plugins:ConfigError: 'ConfigError' of 'example_plugins' is not a named "
            "Plugin subclass",
            id="not-a-plugin",
        ),
        pytest.param(
            {"add-response-header": {"header": "X-Plan"}},
            "routes[0].plugins.add-response-header.value: required",
            id="registered-missing-key",
        ),
    ],
)
def test_user_plugin_config_errors_name_the_place(plugins: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Gateway.from_dict({"routes": [{"uri": "/x", "plugins": plugins}]})
    assert str(raised.value).startswith(message)


def test_the_documented_example_is_the_tested_one() -> None:
    """docs/plugins.md shows examples/plugins/example_plugins.py as it is: the code in the docs runs here."""
    code = EXAMPLE.read_text()
    body = code[code.index("from __future__") :]
    assert body.strip() in DOCS.read_text()
