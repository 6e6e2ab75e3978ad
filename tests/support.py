"""Shared test machinery: echo apps, the request modes, and the reply shape every mode returns.

A *mode* runs one request through a gateway in one of the ways a user can run it (WSGI middleware,
ASGI middleware, and later the proxies) and returns a :class:`Reply`. When the request reaches the
app (or upstream), the echo app answers 200 with a JSON description of what it saw.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote

import pytest
from werkzeug.test import Client

import configs
from consumer_auth import CONSUMER_KEY, Plugin, PluginRequest, Reject, json_reject

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

Headers = Sequence[tuple[str, str]]


def basic(username: str, password: str) -> str:
    """An ``Authorization`` value for these credentials."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@dataclass(frozen=True)
class Deny(Plugin):
    """Rejects in the access phase with its own message (to see which level's copy ran)."""

    name: ClassVar[str] = "deny"
    priority: ClassVar[int] = 500
    message: str = "denied"

    def access(self, request: PluginRequest) -> Reject | None:
        return json_reject(403, "message", self.message)


@dataclass
class Reply:
    """A response as a client sees it; header names lower-case, repeated headers joined by ", "."""

    status: int
    headers: dict[str, str]
    body: bytes

    def seen(self) -> dict[str, Any]:
        """What the echo app saw (only for requests that reached it)."""
        assert self.status == 200, (self.status, self.body)
        data: dict[str, Any] = json.loads(self.body)
        return data


def echo_document(
    method: str, path: str, mount: str, query: str, headers: Iterable[tuple[str, str]], consumer: object
) -> bytes:
    joined: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        joined[key] = f"{joined[key]}, {value}" if key in joined else value
    return json.dumps(
        {
            "method": method,
            "path": path,
            "mount": mount,
            "query": query,
            "headers": joined,
            "consumer": getattr(consumer, "username", None),
        }
    ).encode()


def echo_wsgi(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """A WSGI app that describes the request it received."""
    headers = [
        (key[5:].replace("_", "-"), value) for key, value in environ.items() if key.startswith("HTTP_")
    ]
    body = echo_document(
        environ["REQUEST_METHOD"],
        environ.get("PATH_INFO", ""),
        environ.get("SCRIPT_NAME", ""),
        environ.get("QUERY_STRING", ""),
        headers,
        environ.get(CONSUMER_KEY),
    )
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


async def echo_asgi(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """An ASGI app that describes the request it received (and accepts websockets)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] in ("http", "websocket")
    root = scope.get("root_path", "")
    path = scope["path"][len(root) :] if root and scope["path"].startswith(root) else scope["path"]
    body = echo_document(
        scope["method"] if scope["type"] == "http" else "GET",
        path,
        root,
        scope["query_string"].decode("latin-1"),
        [(n.decode("latin-1"), v.decode("latin-1")) for n, v in scope["headers"]],
        scope.get(CONSUMER_KEY),
    )
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
        await send({"type": "websocket.send", "bytes": None, "text": body.decode()})
        await send({"type": "websocket.close", "code": 1000, "reason": None})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            "trailers": False,
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


@dataclass
class Mode:
    """One way of running a gateway.

    ``request(config, method, path, headers)`` sends one request through a gateway built from the named
    configuration of ``configs.py`` (each mode builds and caches its own) and returns the client's view.
    """

    name: str
    request: Callable[[str, str, str, Headers], Reply]


def _split(path: str) -> tuple[str, str]:
    base, _, query = path.partition("?")
    return base, query


def wsgi_call(app: Any, method: str, path: str, headers: Headers) -> Reply:
    """Send one request to a WSGI app through werkzeug's test client, the path exactly as given."""
    client = Client(app)
    base, query = _split(path)
    host = next((value for name, value in headers if name.lower() == "host"), "localhost")
    # Set PATH_INFO ourselves: a client library would resolve '..' and '//' before the gateway sees them.
    environ_overrides = {
        "PATH_INFO": unquote(base).encode("utf-8").decode("latin-1"),
        "REMOTE_ADDR": "127.0.0.1",  # what a server on loopback sets (werkzeug's test client sets none)
        "HTTP_HOST": host,  # as sent: werkzeug would parse it as part of a URL (and refuse odd ports)
    }
    authorizations = [value for name, value in headers if name.lower() == "authorization"]
    if len(authorizations) > 1:  # a WSGI server joins repeated headers into one value
        environ_overrides["HTTP_AUTHORIZATION"] = ", ".join(authorizations)
    response = client.open(
        base,
        method=method,
        query_string=query,
        headers=[(n, v) for n, v in headers if n.lower() != "host"],
        base_url="http://localhost",
        environ_overrides=environ_overrides,
    )
    reply = Reply(
        response.status_code,
        {name.lower(): value for name, value in response.headers.items()},
        response.get_data(),
    )
    response.close()
    return reply


ABSENT: Any = object()
"""A ``scope_changes`` value of :func:`call_asgi` that removes the key from the scope."""


async def call_asgi(
    app: Any,
    method: str,
    path: str,
    headers: Headers,
    body: bytes = b"",
    root_path: str = "",
    scope_changes: Mapping[str, Any] | None = None,
) -> Reply:
    """Drive an ASGI app with one HTTP request, exactly as given (no client-side path clean-up).

    ``scope_changes`` replaces scope keys (a value of :data:`ABSENT` removes the key), to give the scope
    the shape a particular server gives it.
    """
    base, query = _split(path)
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": root_path + unquote(base),
        "raw_path": (root_path + base).encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "root_path": root_path,
        "headers": [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 80),
    }
    for key, value in (scope_changes or {}).items():
        if value is ABSENT:
            del scope[key]
        else:
            scope[key] = value
    sent: list[dict[str, Any]] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # a client that stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    joined: dict[str, str] = {}
    for raw_name, raw_value in start["headers"]:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Reply(start["status"], joined, content)


def _wsgi_mode(config: str, method: str, path: str, headers: Headers) -> Reply:
    return wsgi_call(configs.gateway(config).wsgi(echo_wsgi), method, path, headers)


def _asgi_mode(config: str, method: str, path: str, headers: Headers) -> Reply:
    return asyncio.run(call_asgi(configs.gateway(config).asgi(echo_asgi), method, path, headers))


MODES: dict[str, Callable[[], Mode]] = {
    "wsgi": lambda: Mode("wsgi", _wsgi_mode),
    "asgi": lambda: Mode("asgi", _asgi_mode),
}
"""Every mode the conformance table runs in: name → a factory (called once per test session).

Other test modules add their modes here (the proxies, the framework integrations).
"""


def header_list(mapping: Mapping[str, str] | Headers) -> list[tuple[str, str]]:
    return list(mapping.items()) if isinstance(mapping, Mapping) else list(mapping)


REQUIRE_SERVICES_ENV = "CONSUMER_AUTH_REQUIRE_SERVICES"


def service_unavailable(what: str, why: str) -> None:
    """Skip a test that needs a local service (PostgreSQL, Redis) that is not there.

    Under CI (``CONSUMER_AUTH_REQUIRE_SERVICES=1``, set by ``.ci/run``) the test fails instead, so CI
    always runs these tests for real.
    """
    message = f"{what} is not available: {why}"
    if os.environ.get(REQUIRE_SERVICES_ENV) == "1":
        pytest.fail(f"{message} (and {REQUIRE_SERVICES_ENV}=1 requires it)")
    pytest.skip(message)


REDIS_URL = "redis://127.0.0.1:6379/0"
"""The test Redis (CI runs one there)."""


def redis_or_skip(url: str = REDIS_URL) -> None:
    """Skip (or, under CI, fail) a test when Redis does not answer at ``url``."""
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception as error:  # noqa: BLE001 - any failure means "not available"
        service_unavailable("Redis", type(error).__name__)


def cheap_argon2(password: str) -> str:
    """An argon2id hash made with the smallest parameters: a slow-hash verifier, quick enough for tests."""
    import argon2

    return argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(password)


def within(seconds: float, predicate: Callable[[], bool]) -> bool:
    """Whether ``predicate`` becomes true within ``seconds`` (polled every 20 ms)."""
    deadline = time.monotonic() + seconds
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
