"""Two ``consumer-auth serve`` processes on one PostgreSQL store: a consumer added, a password rotated, a
consumer removed (with ``consumer-auth consumers`` and through ``consumer-auth admin``) reach both, and both
ride out the store's connections being terminated.

The tests wait for each change with a generous deadline and assert that it arrives, never how fast: how
fast (under a second) is measured by ``benchmarks/store.py`` (docs/deployment.md).

Every process is real: the gateways and the Admin API are ``consumer-auth`` commands on ephemeral
loopback ports, in front of an echo upstream; the store is a schema of its own in the test database.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from consumer_auth.store import SQLStore
from pg import Database
from proxy_servers import CONSUMER_AUTH, Process, request, start_upstream
from support import basic, within

ADMIN_KEY = f"admin-{uuid.uuid4().hex}"


@dataclass
class Gateway:
    """A ``consumer-auth serve`` process."""

    process: Process
    port: int

    def status(self, login: str, password: str) -> int:
        return request(self.port, "GET", "/json", [("Authorization", basic(login, password))]).status

    def seen(self, login: str, password: str) -> dict[str, Any]:
        reply = request(self.port, "GET", "/json", [("Authorization", basic(login, password))])
        assert reply.status == 200, reply.body
        data: dict[str, Any] = json.loads(reply.body)
        return data

    def log(self) -> str:
        return "\n".join(self.process.stderr)


CHANGE_DEADLINE = 60.0
"""How long a change may take to reach a gateway before the test fails: generous, since these tests
assert that changes arrive, not their speed (a loaded machine may take seconds)."""


def honoured(gateway: Gateway, login: str, password: str, status: int) -> None:
    """Assert that ``gateway`` comes to answer ``status`` for these credentials (the gateway's log if not)."""
    if not within(CHANGE_DEADLINE, lambda: gateway.status(login, password) == status):
        pytest.fail(f"{login} never got {status}; the gateway's log:\n{gateway.log()}")


def consumers(*args: str, store: str, password: str | None = None) -> str:
    """Run ``consumer-auth consumers ...`` on the store; its output (it must succeed)."""
    result = subprocess.run(
        [CONSUMER_AUTH, "consumers", *args, "--store", store],
        input=None if password is None else password + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def gateways(postgres: Database, tmp_path: Path) -> Iterator[tuple[Gateway, Gateway]]:
    upstream = start_upstream(name="echo")
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        f"routes:\n  - uri: /json\n    upstream: {upstream.url}\n    plugins:\n      basic-auth: {{}}\n"
    )
    started: list[Gateway] = []
    try:
        for _ in range(2):
            process = Process(
                [CONSUMER_AUTH, "serve", "--config", str(routes), "--store", postgres.url, "--port", "0"]
            )
            started.append(Gateway(process, process.uvicorn_port()))
        yield started[0], started[1]
    finally:
        for gateway in started:
            gateway.process.terminate()
            gateway.process.kill()


@pytest.fixture
def admin(postgres: Database) -> Iterator[str]:
    process = Process(
        [CONSUMER_AUTH, "admin", "--store", postgres.url, "--port", "0"],
        env={"CONSUMER_AUTH_ADMIN_KEY": ADMIN_KEY},
    )
    try:
        yield f"http://127.0.0.1:{process.uvicorn_port()}"
    finally:
        process.terminate()
        process.kill()


def test_add_rotate_and_remove_reach_both_gateways(
    postgres: Database, gateways: tuple[Gateway, Gateway], admin: str
) -> None:
    one, two = gateways
    assert one.status("alex", "first-pw") == 401

    consumers(
        "add",
        "alex",
        "--label",
        "custom_id=c-1",
        "--credential-id",
        "main",
        store=postgres.url,
        password="first-pw",
    )
    for gateway in gateways:
        honoured(gateway, "alex", "first-pw", 200)
    seen = two.seen("alex", "first-pw")
    assert seen["headers"]["x-consumer-username"] == "alex"
    assert seen["headers"]["x-credential-identifier"] == "main"
    assert seen["headers"]["x-consumer-custom-id"] == "c-1"

    # A password rotated in place: the old one stops working everywhere.
    consumers("passwd", "alex", store=postgres.url, password="second-pw")
    for gateway in gateways:
        honoured(gateway, "alex", "second-pw", 200)
        honoured(gateway, "alex", "first-pw", 401)

    # Rotation without downtime, through the Admin API: a second credential, then the first one goes.
    created = httpx.put(
        f"{admin}/apisix/admin/consumers/alex/credentials/next",
        json={"plugins": {"basic-auth": {"username": "alex-2", "password": "third-pw"}}},
        headers={"X-API-KEY": ADMIN_KEY},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    for gateway in gateways:
        honoured(gateway, "alex-2", "third-pw", 200)
    assert two.status("alex", "second-pw") == 200
    assert two.seen("alex-2", "third-pw")["headers"]["x-credential-identifier"] == "next"
    deleted = httpx.delete(
        f"{admin}/apisix/admin/consumers/alex/credentials/main", headers={"X-API-KEY": ADMIN_KEY}, timeout=30
    )
    assert deleted.status_code == 200
    for gateway in gateways:
        honoured(gateway, "alex", "second-pw", 401)

    consumers("remove", "alex", store=postgres.url)
    for gateway in gateways:
        honoured(gateway, "alex-2", "third-pw", 401)

    for gateway in gateways:
        log = gateway.log()
        assert "-pw" not in log, log
        assert "$argon2" not in log, log


def test_both_gateways_ride_out_terminated_connections_and_catch_up(
    postgres: Database, gateways: tuple[Gateway, Gateway]
) -> None:
    one, two = gateways
    consumers("add", "alex", store=postgres.url, password="pw-alex")
    for gateway in gateways:
        honoured(gateway, "alex", "pw-alex", 200)

    terminated = postgres.terminate_store_connections()
    assert terminated >= 2, (terminated, one.log(), two.log())  # at least each gateway's LISTEN connection

    # The store's connections are gone: both keep answering from their snapshot.
    assert one.status("alex", "pw-alex") == 200, one.log()
    assert two.status("alex", "pw-alex") == 200, two.log()

    # A change made while they reconnect (its notification may be lost) is caught up with.
    consumers("add", "bob", store=postgres.url, password="pw-bob")
    for gateway in gateways:
        gateway.process.wait_for("the store answers again", gateway.process.stderr, timeout=CHANGE_DEADLINE)
        honoured(gateway, "bob", "pw-bob", 200)

    # Once reconnected, the next change reaches both.
    consumers("remove", "bob", store=postgres.url)
    for gateway in gateways:
        honoured(gateway, "bob", "pw-bob", 401)
        assert gateway.status("alex", "pw-alex") == 200

    for gateway in gateways:
        log = gateway.log()
        assert log.count("cannot read the store") == 1, log  # logged once per change of state
        assert log.count("the store answers again") == 1, log
        assert "pw-" not in log, log
        assert "$argon2" not in log, log


def test_serve_refuses_an_unreachable_store_at_start(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - uri: /json\n    upstream: http://127.0.0.1:9\n")
    result = subprocess.run(
        [
            CONSUMER_AUTH,
            "serve",
            "--config",
            str(routes),
            "--store",
            "postgresql://gw:hunter2@127.0.0.1:1/db",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("consumer-auth: error: ")
    assert "hunter2" not in result.stderr


def test_the_admin_api_on_postgresql_answers_400_for_what_the_columns_cannot_hold(
    postgres: Database, admin: str
) -> None:
    headers = {"X-API-KEY": ADMIN_KEY}
    document = {"plugins": {"basic-auth": {"username": "u", "password": "pw"}}}

    def put(path: str, body: object) -> httpx.Response:
        return httpx.put(f"{admin}/apisix/admin/{path}", json=body, headers=headers, timeout=30)

    assert (
        put("consumers/keep", {"plugins": {"basic-auth": {"username": "keep", "password": "pw"}}}).status_code
        == 201
    )
    store = SQLStore(postgres.url)

    def stored() -> tuple[int, list[tuple[str, Mapping[str, Any]]]]:
        return store.revision(), [(r.key, r.document) for r in store.list_resources("consumers")]

    before = stored()
    long_name = put("consumers/" + "n" * 201, document)
    assert long_name.status_code == 400
    assert long_name.json() == {
        "error_msg": "invalid configuration: username: expected at most 128 characters, got 201"
    }
    nul = put("consumers/x", {"desc": "a\u0000b"})
    assert nul.status_code == 400
    surrogate = httpx.put(
        f"{admin}/apisix/admin/consumers/x",
        content=b'{"plugins": {"basic-auth": {"username": "x", "password": "\\ud800"}}}',
        headers=headers,
        timeout=30,
    )
    assert surrogate.status_code == 400
    assert stored() == before
    store.close()
    # the longest name a store keeps, with the longest credential id, fits the key column
    longest = "n" * 128
    assert put(f"consumers/{longest}", {}).status_code == 201
    credential = {"plugins": {"basic-auth": {"username": "longest", "password": "pw"}}}
    assert put(f"consumers/{longest}/credentials/{'c' * 64}", credential).status_code == 201
