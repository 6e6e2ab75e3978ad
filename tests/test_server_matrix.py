"""The guide's four requests through every supported server, in real server processes on loopback.

The ASGI middleware and the ASGI proxy run on uvicorn, hypercorn, granian and daphne; the WSGI
middleware and the WSGI proxy on gunicorn (gthread worker) and waitress. Each server × way of running is
one test: the server is started as a user would start it (its own command line, ``matrix_apps:<app>``),
the proxies forward to a real echo upstream on loopback, and every answer is checked byte for byte as
the conformance table checks it (``docs/deployment.md`` lists the same command lines).

The servers are in the ``dev`` extra, so a missing one fails the test rather than skipping it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import proxy_modes
import proxy_servers
from matrix_apps import CONFIG_ENV
from support import Reply, basic

TESTS = Path(__file__).resolve().parent
HOST = ("Host", "example.com")
ALEX = basic("alex", "123456")
TEXT_PLAIN = "text/plain; charset=utf-8"
CHALLENGE = "Basic realm='.'"
# Headers a server writes on its own (as nginx writes Date and Server in front of APISIX).
SERVERS_OWN = frozenset({"date", "server", "connection", "keep-alive"})


@dataclass(frozen=True)
class Server:
    """A server as a user runs it.

    ``args`` is its command line (after ``python -m``), ``{app}`` standing for ``module:attribute`` and
    ``{port}`` for the port. ``listening`` matches the line of its output (``stream``) that says it
    listens, its first group the port. The port given is ``0`` (the system chooses) unless
    ``any_port`` is false: then a free loopback port is chosen beforehand.
    """

    name: str
    interface: str
    args: str
    listening: str
    stream: str = "stderr"
    any_port: bool = True

    def command(self, app: str, port: int) -> list[str]:
        return [sys.executable, "-m", *self.args.format(app=app, port=port).split()]


SERVERS = [
    Server(
        "uvicorn",
        "asgi",
        "uvicorn --host 127.0.0.1 --port {port} --no-access-log {app}",
        r"Uvicorn running on http://127\.0\.0\.1:(\d+)",
    ),
    Server(
        "hypercorn",
        "asgi",
        "hypercorn --bind 127.0.0.1:{port} {app}",
        r"Running on http://127\.0\.0\.1:(\d+)",
    ),
    # granian's own interface is RSGI: --interface asgi is needed. It logs the port it was given (":0" when
    # asked for 0), once it is bound, on standard output.
    Server(
        "granian",
        "asgi",
        "granian --interface asgi --host 127.0.0.1 --port {port} --workers 1 --no-access-log {app}",
        r"Listening at: http://127\.0\.0\.1:(\d+)",
        stream="stdout",
        any_port=False,
    ),
    Server(
        "daphne",
        "asgi",
        "daphne -b 127.0.0.1 -p {port} {app}",
        r"Listening on TCP address 127\.0\.0\.1:(\d+)",
    ),
    # --no-control-socket: every test's gunicorn would use the same ~/.gunicorn/gunicorn.ctl.
    Server(
        "gunicorn",
        "wsgi",
        "gunicorn --worker-class gthread --workers 1 --threads 4 --bind 127.0.0.1:{port} --no-control-socket {app}",
        r"Listening at: http://127\.0\.0\.1:(\d+)",
    ),
    Server(
        "waitress",
        "wsgi",
        "waitress --listen=127.0.0.1:{port} {app}",
        r"Serving on http://127\.0\.0\.1:(\d+)",
    ),
]

CASES = [
    pytest.param(server, mode, id=f"{server.name}-{mode}")
    for server in SERVERS
    for mode in ("middleware", "proxy")
]


@pytest.fixture(scope="module")
def upstream() -> proxy_servers.UpstreamServer:
    return proxy_servers.start_upstream(proxy_servers.echo, "matrix-echo")


def _wait_until_accepting(process: proxy_servers.Process, port: int, timeout: float = 60) -> None:
    """Return once the port accepts connections; fail (with the server's output) if the server exits
    or does not get there within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                return
        except OSError:
            if process.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"the server is not accepting on port {port}: exit={process.proc.poll()} "
                    f"stdout={process.stdout!r} stderr={process.stderr!r}"
                ) from None
            time.sleep(0.05)


# A port chosen beforehand may be taken by another process before the server binds it: then try another.
_IN_USE = re.compile(r"[Aa]ddress already in use")
_TRIES = 3


def _start(server: Server, app: str, env: dict[str, str], cwd: Path) -> tuple[int, proxy_servers.Process]:
    """Start ``server`` serving ``app``; its port once it accepts connections, and its process."""
    for _ in range(_TRIES):
        chosen = 0 if server.any_port else proxy_servers.refused_port()
        process = proxy_servers.Process(server.command(app, chosen), env=env, cwd=cwd)
        lines = process.stdout if server.stream == "stdout" else process.stderr
        try:
            port = int(process.wait_for(server.listening, lines, timeout=60).group(1))
        except AssertionError:
            process.kill()
            if server.any_port or not any(_IN_USE.search(line) for line in process.stderr):
                raise
            continue
        _wait_until_accepting(process, port)
        return port, process
    raise AssertionError(f"{server.name}: {_TRIES} free ports were taken before it could bind them")


@pytest.fixture
def served(
    request: pytest.FixtureRequest, upstream: proxy_servers.UpstreamServer, tmp_path: Path
) -> Iterator[tuple[int, proxy_servers.Process]]:
    """The server of the test's parameters serving its app; (port, process)."""
    server: Server = request.node.callspec.params["server"]
    mode: str = request.node.callspec.params["mode"]
    if importlib.util.find_spec(server.name) is None:
        pytest.fail(f"{server.name} is not installed: it is in the dev extra (pip install -e '.[dev]')")
    config = tmp_path / "matrix.json"
    config.write_text(
        json.dumps({"gateway": proxy_modes.proxied("guide", upstream.url), "upstream": upstream.url})
    )
    env = {CONFIG_ENV: str(config), "PYTHONPATH": str(TESTS), "PYTHONUNBUFFERED": "1"}
    port, process = _start(server, f"matrix_apps:{server.interface}_{mode}", env, tmp_path)
    try:
        yield port, process
    finally:
        process.terminate()


def _own_headers(reply: Reply) -> dict[str, str]:
    return {name: value for name, value in reply.headers.items() if name not in SERVERS_OWN}


def _rejected(message: str, challenge: str | None) -> tuple[int, bytes, dict[str, str]]:
    body = json.dumps({"message": message}, separators=(",", ":")).encode() + b"\n"
    headers = {"content-type": TEXT_PLAIN, "content-length": str(len(body))}
    if challenge is not None:
        headers["www-authenticate"] = challenge
    return 401, body, headers


@pytest.mark.parametrize(("server", "mode"), CASES)
def test_the_guide_on_a_real_server(
    server: Server,
    mode: str,
    served: tuple[int, proxy_servers.Process],
    upstream: proxy_servers.UpstreamServer,
) -> None:
    port, process = served

    def get(*headers: tuple[str, str]) -> Reply:
        return proxy_servers.request(port, "GET", "/v1/json", [HOST, *headers])

    def answer(reply: Reply) -> tuple[int, bytes, dict[str, str]]:
        return reply.status, reply.body, _own_headers(reply)

    output = f"stdout={process.stdout!r} stderr={process.stderr!r}"
    # curl -i http://example.com/v1/json
    assert answer(get()) == _rejected("Missing authorization in request", CHALLENGE), output
    # curl -i -u wrong-user:wrong-password
    assert answer(get(("Authorization", basic("wrong-user", "wrong-password")))) == _rejected(
        "Invalid user key in authorization", None
    ), output
    # curl -i -u alex:wrong-password
    assert answer(get(("Authorization", basic("alex", "wrong-password")))) == _rejected(
        "Password is error", None
    ), output
    # curl -i -u alex:123456
    before = upstream.count
    reply = get(("Authorization", ALEX))
    assert reply.status == 200, (reply.body, output)
    seen: dict[str, Any] = reply.seen()
    assert (seen["method"], seen["path"], seen["query"], seen["consumer"]) == ("GET", "/json", "", "alex")
    assert seen["headers"]["x-consumer-username"] == "alex"
    assert seen["headers"]["authorization"] == ALEX  # the guide's route keeps credentials
    if mode == "middleware":
        assert seen["mount"] == "/v1"  # the app is mounted below the service prefix
        assert upstream.count == before
    else:
        assert seen["server"] == "matrix-echo"
        assert upstream.count == before + 1
        assert seen["headers"]["x-forwarded-port"] == str(port)
        assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
        assert seen["headers"]["x-forwarded-host"] == "example.com"
