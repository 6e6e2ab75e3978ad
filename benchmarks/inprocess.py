"""In-process overhead of authentication per request: direct ASGI/WSGI calls, no server, no sockets.

Overhead = time per authenticated request through the protected app − time per request to the same app
without authentication, measured in interleaved rounds (the median of the per-round differences):

- ASGI: ``gateway.asgi(app)`` around a bare ASGI app, vs FastAPI's ``HTTPBasic`` dependency with
  ``secrets.compare_digest`` on a FastAPI route: once as FastAPI's documentation writes it (a plain ``def``
  dependency, which FastAPI runs in its thread pool) and once as an ``async def`` dependency (no thread hop);
- WSGI: ``gateway.wsgi(app)`` around a bare WSGI app, vs Flask-HTTPAuth's ``HTTPBasicAuth`` with
  ``secrets.compare_digest`` on a Flask view;
- argon2id credentials with a warm verification cache vs clear-text credentials, both through the gateway;
- a careful hand-written check, in ASGI and WSGI (:func:`handwritten_asgi`, :func:`handwritten_wsgi`: header
  lookup, base64, split on the first ``:``, dict lookup, ``hmac.compare_digest``, exact route test): what a
  user would write instead of a library.

The gateway guards the route as the guide writes it: an exact ``uri`` with ``methods: [GET]``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import io
import secrets
import sys
import time
from collections.abc import Callable
from typing import Any

from _common import Result, Target, interleaved, median, us
from fastapi import Depends, FastAPI
from fastapi.responses import PlainTextResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from flask import Flask
from flask_httpauth import HTTPBasicAuth

from consumer_auth import BasicAuthPlugin, Consumer, Gateway, Route, hash_password

PASSWORD = "123456"
AUTHORIZATION = "Basic " + base64.b64encode(f"alex:{PASSWORD}".encode()).decode()


def gateway(password_hash: str | None) -> Gateway:
    consumer = (
        Consumer("alex", password_hash=password_hash)
        if password_hash
        else Consumer("alex", password=PASSWORD)
    )
    return Gateway(consumers=[consumer], routes=[Route("/x", methods=["GET"], plugins=[BasicAuthPlugin()])])


# -- the hand-written check --------------------------------------------------------------------------

USERS = {"alex": PASSWORD.encode()}
_DENIED = b'{"message":"Unauthorized"}'


def _allowed(path: str, header: str | None) -> bool:
    """The ten lines a user would write: exact route, Basic header, base64, first ``:``, constant time."""
    if path != "/x" or header is None or header[:6] != "Basic ":
        return False
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    known = USERS.get(user)
    return known is not None and hmac.compare_digest(known, password.encode())


def handwritten_wsgi(app: Any) -> Any:
    def guarded(environ: Any, start_response: Any) -> Any:
        if _allowed(environ.get("PATH_INFO", ""), environ.get("HTTP_AUTHORIZATION")):
            return app(environ, start_response)
        start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="x"')])
        return [_DENIED]

    return guarded


def handwritten_asgi(app: Any) -> Any:
    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        header = next((v.decode("latin-1") for n, v in scope["headers"] if n == b"authorization"), None)
        if _allowed(scope["path"], header):
            await app(scope, receive, send)
            return
        await send(
            {"type": "http.response.start", "status": 401, "headers": [(b"www-authenticate", b"Basic")]}
        )
        await send({"type": "http.response.body", "body": _DENIED})

    return guarded


# -- ASGI ------------------------------------------------------------------------------------------

_START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
_BODY = {"type": "http.response.body", "body": b"ok", "more_body": False}


async def bare_asgi(scope: Any, receive: Any, send: Any) -> None:
    await send(_START)
    await send(_BODY)


def fastapi_apps() -> tuple[FastAPI, FastAPI, FastAPI]:
    """A bare FastAPI app, and two guarded ones: the documentation's sync dependency, and an async one."""
    plain = FastAPI()
    guarded = FastAPI()
    guarded_async = FastAPI()
    security = HTTPBasic()

    @plain.get("/x")
    async def open_view() -> PlainTextResponse:
        return PlainTextResponse("ok")

    def current_user(credentials: HTTPBasicCredentials = Depends(security)) -> str:  # noqa: B008
        good_user = secrets.compare_digest(credentials.username.encode(), b"alex")
        good_password = secrets.compare_digest(credentials.password.encode(), PASSWORD.encode())
        if not (good_user and good_password):
            from fastapi import HTTPException

            raise HTTPException(401, "Incorrect username or password", {"WWW-Authenticate": "Basic"})
        return credentials.username

    async def current_user_async(credentials: HTTPBasicCredentials = Depends(security)) -> str:  # noqa: B008
        return current_user(credentials)

    @guarded.get("/x")
    async def guarded_view(user: str = Depends(current_user)) -> PlainTextResponse:  # noqa: B008
        return PlainTextResponse("ok")

    @guarded_async.get("/x")
    async def guarded_async_view(user: str = Depends(current_user_async)) -> PlainTextResponse:  # noqa: B008
        return PlainTextResponse("ok")

    return plain, guarded, guarded_async


def asgi_scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/x",
        "raw_path": b"/x",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"example.com"), (b"authorization", AUTHORIZATION.encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def asgi_timer(app: Any, loop: asyncio.AbstractEventLoop, calls: int) -> Callable[[], float]:
    scope = asgi_scope()
    status: list[int] = []
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    async def batch() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            await app(dict(scope), receive, send)
        return (time.perf_counter() - start) / calls

    def measure() -> float:
        status.clear()
        took = loop.run_until_complete(batch())
        assert set(status) == {200}, status
        return took

    return measure


# -- WSGI ------------------------------------------------------------------------------------------


def bare_wsgi(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def flask_apps() -> tuple[Flask, Flask]:
    plain = Flask("plain")
    guarded = Flask("guarded")
    auth = HTTPBasicAuth()
    users = {"alex": PASSWORD}

    @plain.get("/x")
    def open_view() -> str:
        return "ok"

    @auth.verify_password
    def verify(username: str, password: str) -> str | None:
        known = users.get(username)
        if known is not None and secrets.compare_digest(known.encode(), password.encode()):
            return username
        return None

    @guarded.get("/x")
    @auth.login_required
    def guarded_view() -> str:
        return "ok"

    return plain, guarded


def wsgi_environ() -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/x",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "example.com",
        "HTTP_AUTHORIZATION": AUTHORIZATION,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def wsgi_timer(app: Any, calls: int) -> Callable[[], float]:
    environ = wsgi_environ()
    status: list[str] = []

    def start_response(line: str, headers: Any, exc_info: Any = None) -> Any:
        status.append(line)

    def measure() -> float:
        status.clear()
        start = time.perf_counter()
        for _ in range(calls):
            request = dict(environ)
            request["wsgi.input"] = io.BytesIO()
            result = app(request, start_response)
            for _chunk in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()
        took = (time.perf_counter() - start) / calls
        assert {s.split()[0] for s in status} == {"200"}, status[:3]
        return took

    return measure


def differences(samples: dict[str, list[float]], app: str, base: str) -> float:
    """Median over rounds of (app − base) measured in the same round."""
    return median([a - b for a, b in zip(samples[app], samples[base], strict=True)])


def run(quick: bool = False) -> Result:
    calls, rounds = (500, 5) if quick else (3_000, 15)
    argon2_hash = hash_password(PASSWORD)
    plain_gateway, argon_gateway = gateway(None), gateway(argon2_hash)
    loop = asyncio.new_event_loop()
    try:
        fast_plain, fast_guarded, fast_guarded_async = fastapi_apps()
        asgi_argon = argon_gateway.asgi(bare_asgi)
        asgi_timer(asgi_argon, loop, 1)()  # warm the verification cache (one argon2id verification)
        asgi = interleaved(
            {
                "bare": asgi_timer(bare_asgi, loop, calls),
                "consumer_auth": asgi_timer(plain_gateway.asgi(bare_asgi), loop, calls),
                "consumer_auth argon2id": asgi_timer(asgi_argon, loop, calls),
                "hand-written check": asgi_timer(handwritten_asgi(bare_asgi), loop, calls),
                "fastapi": asgi_timer(fast_plain, loop, calls),
                "fastapi HTTPBasic": asgi_timer(fast_guarded, loop, calls),
                "fastapi HTTPBasic async": asgi_timer(fast_guarded_async, loop, calls),
            },
            rounds,
        )
    finally:
        loop.close()
    flask_plain, flask_guarded = flask_apps()
    wsgi_argon = argon_gateway.wsgi(bare_wsgi)
    wsgi_timer(wsgi_argon, 1)()
    wsgi = interleaved(
        {
            "bare": wsgi_timer(bare_wsgi, calls),
            "consumer_auth": wsgi_timer(plain_gateway.wsgi(bare_wsgi), calls),
            "consumer_auth argon2id": wsgi_timer(wsgi_argon, calls),
            "hand-written check": wsgi_timer(handwritten_wsgi(bare_wsgi), calls),
            "flask": wsgi_timer(flask_plain, calls),
            "flask HTTPBasicAuth": wsgi_timer(flask_guarded, calls),
        },
        rounds,
    )
    ours_asgi = differences(asgi, "consumer_auth", "bare")
    ours_asgi_argon = differences(asgi, "consumer_auth argon2id", "bare")
    fastapi_overhead = differences(asgi, "fastapi HTTPBasic", "fastapi")
    fastapi_async_overhead = differences(asgi, "fastapi HTTPBasic async", "fastapi")
    ours_wsgi = differences(wsgi, "consumer_auth", "bare")
    ours_wsgi_argon = differences(wsgi, "consumer_auth argon2id", "bare")
    flask_overhead = differences(wsgi, "flask HTTPBasicAuth", "flask")
    hand_asgi = differences(asgi, "hand-written check", "bare")
    hand_wsgi = differences(wsgi, "hand-written check", "bare")

    result = Result(
        "In-process authentication overhead",
        f"Direct ASGI/WSGI calls, {calls:,} requests per sample, {rounds} interleaved rounds; overhead = "
        "protected app − the same app unprotected, median of per-round differences. All requests carry "
        "valid credentials and answer 200.",
        header=["interface", "what", "per request", "auth overhead", "overhead ÷ consumer_auth's (clear)"],
    )

    def row(
        interface: str, name: str, samples: dict[str, list[float]], overhead: float | None, ours: float
    ) -> None:
        ratio = f"{overhead / ours:.2f}×" if overhead is not None else ""
        result.table.append(
            [interface, name, us(median(samples[name])), us(overhead) if overhead is not None else "—", ratio]
        )

    row("ASGI", "bare", asgi, None, ours_asgi)
    row("ASGI", "consumer_auth", asgi, ours_asgi, ours_asgi)
    row("ASGI", "consumer_auth argon2id", asgi, ours_asgi_argon, ours_asgi)
    row("ASGI", "hand-written check", asgi, hand_asgi, ours_asgi)
    row("ASGI", "fastapi", asgi, None, ours_asgi)
    row("ASGI", "fastapi HTTPBasic", asgi, fastapi_overhead, ours_asgi)
    row("ASGI", "fastapi HTTPBasic async", asgi, fastapi_async_overhead, ours_asgi)
    row("WSGI", "bare", wsgi, None, ours_wsgi)
    row("WSGI", "consumer_auth", wsgi, ours_wsgi, ours_wsgi)
    row("WSGI", "consumer_auth argon2id", wsgi, ours_wsgi_argon, ours_wsgi)
    row("WSGI", "hand-written check", wsgi, hand_wsgi, ours_wsgi)
    row("WSGI", "flask", wsgi, None, ours_wsgi)
    row("WSGI", "flask HTTPBasicAuth", wsgi, flask_overhead, ours_wsgi)
    result.targets += [
        Target("ASGI overhead vs the hand-written check", ours_asgi / hand_asgi, 2.5, "<="),
        Target("WSGI overhead vs the hand-written check", ours_wsgi / hand_wsgi, 2.5, "<="),
        Target(
            "ASGI overhead vs FastAPI HTTPBasic (async dependency)",
            ours_asgi / fastapi_async_overhead,
            0.5,
            "<=",
        ),
        Target(
            "ASGI overhead vs FastAPI HTTPBasic (documented sync dependency)",
            ours_asgi / fastapi_overhead,
            0.5,
            "<=",
        ),
        Target("WSGI overhead vs Flask-HTTPAuth", ours_wsgi / flask_overhead, 0.5, "<="),
        Target("ASGI argon2id (warm cache) vs clear password", ours_asgi_argon / ours_asgi, 1.3, "<="),
        Target("WSGI argon2id (warm cache) vs clear password", ours_wsgi_argon / ours_wsgi, 1.3, "<="),
    ]
    return result


if __name__ == "__main__":
    outcome = run(quick="--quick" in sys.argv)
    for line in outcome.table:
        print(*line, sep="\t")
    for target in outcome.targets:
        print(target.describe())
