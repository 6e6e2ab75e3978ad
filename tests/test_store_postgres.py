"""Two gateway processes on one PostgreSQL store: changes through one reach the other within a second,
and both ride out the store's connections being terminated.

Each process (``store_server.py``) serves the echo app behind a gateway attached to the store, and the
Admin API on the same store, on ephemeral loopback ports.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import argon2
import httpx
import pytest

from pg import Database
from support import basic

TESTS = Path(__file__).parent
ADMIN_KEY = f"admin-{uuid.uuid4().hex}"
# Cheap argon2 parameters: these tests measure propagation, not hashing.
_CHEAP = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def cheap_hash(password: str) -> str:
    return _CHEAP.hash(password)


def within(seconds: float, predicate: Callable[[], bool]) -> bool:
    """Whether ``predicate`` becomes true within ``seconds`` (polled; checked once more at the end)."""
    deadline = time.monotonic() + seconds
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def honoured(server: Server, login: str, password: str, status: int, seconds: float = 1.0) -> None:
    """Assert that ``server`` answers ``status`` for these credentials within ``seconds``.

    On failure, keep polling a while longer to say whether the change came late or never, with the log.
    """
    started = time.monotonic()
    if within(seconds, lambda: server.status(login, password) == status):
        return
    late = within(10.0, lambda: server.status(login, password) == status)
    took = f"after {time.monotonic() - started:.2f} s" if late else "not even after 10 s"
    pytest.fail(f"{login} got {status} {took} (bound {seconds} s); the server's log:\n{server.logged()}")


@dataclass
class Server:
    process: subprocess.Popen[str]
    gateway: str
    admin: str
    log: Path

    def status(self, login: str, password: str) -> int:
        response = httpx.get(
            f"{self.gateway}/json", headers={"Authorization": basic(login, password)}, timeout=10
        )
        return response.status_code

    def seen(self, login: str, password: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.gateway}/json", headers={"Authorization": basic(login, password)}, timeout=10
        )
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def admin_call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.admin}/apisix/admin/{path}",
            json=body,
            headers={"X-API-KEY": ADMIN_KEY},
            timeout=10,
        )

    def logged(self) -> str:
        return self.log.read_text()


def start_server(url: str, log: Path) -> Server:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
    }
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(TESTS / "store_server.py"), url, ADMIN_KEY],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(10)
        pytest.fail(f"the gateway process did not start:\n{log.read_text()}")
    ports = dict(part.split("=") for part in line.split())
    return Server(process, f"http://127.0.0.1:{ports['gateway']}", f"http://127.0.0.1:{ports['admin']}", log)


@pytest.fixture
def servers(postgres: Database, tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    started: list[Server] = []
    try:
        for name in ("one", "two"):
            started.append(start_server(postgres.url, tmp_path / f"{name}.log"))
        yield started[0], started[1]
    finally:
        for server in started:
            server.process.terminate()
        for server in started:
            try:
                server.process.wait(10)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(10)
            if server.process.stdout is not None:
                server.process.stdout.close()


def credential(login: str, password: str) -> dict[str, Any]:
    return {"plugins": {"basic-auth": {"username": login, "password_hash": cheap_hash(password)}}}


def test_add_rotate_and_remove_through_one_process_reach_the_other_within_a_second(
    servers: tuple[Server, Server],
) -> None:
    one, two = servers
    assert two.status("alex", "first") == 401

    assert one.admin_call("PUT", "consumers/alex", {"labels": {"custom_id": "c-1"}}).status_code == 201
    assert (
        one.admin_call("PUT", "consumers/alex/credentials/main", credential("alex", "first")).status_code
        == 201
    )
    honoured(two, "alex", "first", 200)
    seen = two.seen("alex", "first")
    assert seen["headers"]["x-consumer-username"] == "alex"
    assert seen["headers"]["x-credential-identifier"] == "main"
    assert seen["headers"]["x-consumer-custom-id"] == "c-1"

    # Rotation: the same credential, a new password.
    assert (
        one.admin_call("PUT", "consumers/alex/credentials/main", credential("alex", "second")).status_code
        == 200
    )
    honoured(two, "alex", "second", 200)
    assert two.status("alex", "first") == 401

    # Rotation without downtime: a second credential, then the first one goes.
    assert (
        one.admin_call("PUT", "consumers/alex/credentials/next", credential("alex-2", "third")).status_code
        == 201
    )
    honoured(two, "alex-2", "third", 200)
    assert two.status("alex", "second") == 200
    assert two.seen("alex-2", "third")["headers"]["x-credential-identifier"] == "next"
    assert one.admin_call("DELETE", "consumers/alex/credentials/main").status_code == 200
    honoured(two, "alex", "second", 401)

    assert one.admin_call("DELETE", "consumers/alex").status_code == 200
    honoured(two, "alex-2", "third", 401)
    assert one.status("alex-2", "third") == 401

    for server in servers:
        log = server.logged()
        assert "first" not in log, log
        assert "$argon2" not in log, log


def test_both_processes_ride_out_terminated_connections_and_catch_up(
    postgres: Database, servers: tuple[Server, Server]
) -> None:
    from consumer_auth.store import SQLStore

    one, two = servers
    one.admin_call("PUT", "consumers/alex", credential_consumer("alex", "pw-alex"))
    honoured(two, "alex", "pw-alex", 200)

    terminated = postgres.terminate_store_connections()
    assert terminated >= 2, (terminated, one.logged(), two.logged())  # at least each LISTEN connection

    # The store's connections are gone: both keep answering from their snapshot.
    assert one.status("alex", "pw-alex") == 200, one.logged()
    assert two.status("alex", "pw-alex") == 200, two.logged()

    # A change made while they reconnect (its notification may be lost) is caught up with.
    store = SQLStore(postgres.url)
    try:
        store.put_resource("consumers", "bob", credential_consumer("bob", "pw-bob"))
    finally:
        store.close()
    for server in servers:
        assert within(10.0, lambda: "the store answers again" in server.logged()), server.logged()  # noqa: B023
        honoured(server, "bob", "pw-bob", 200, seconds=10.0)

    # Once reconnected, the next change through one reaches the other within a second.
    assert one.admin_call("DELETE", "consumers/bob").status_code == 200
    honoured(two, "bob", "pw-bob", 401)
    assert two.status("alex", "pw-alex") == 200

    for server in servers:
        log = server.logged()
        assert log.count("cannot read the store") == 1, log  # logged once per change of state
        assert log.count("the store answers again") == 1, log
        assert "pw-" not in log, log
        assert "$argon2" not in log, log


def credential_consumer(login: str, password: str) -> dict[str, Any]:
    return {"plugins": {"basic-auth": {"username": login, "password_hash": cheap_hash(password)}}}
