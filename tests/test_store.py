"""Stores without a server: SQLite and watched config files, and the watcher's outage handling."""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import argon2
import pytest

from consumer_auth import (
    BasicAuthPlugin,
    ConfigError,
    Gateway,
    Reject,
    RequestFacts,
    Route,
    StoreError,
    StoreUnavailableError,
)
from consumer_auth.store import FileStore, Snapshot, SQLStore, StoreWatcher, open_store, redact
from support import basic, within

_CHEAP = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def status(gateway: Gateway, login: str, password: str, path: str = "/json") -> int:
    decision = gateway.decide_now(RequestFacts("GET", path, "localhost", (basic(login, password),)))
    return decision.status if isinstance(decision, Reject) else 200


def consumer(login: str, password: str) -> dict[str, Any]:
    return {"plugins": {"basic-auth": {"username": login, "password_hash": _CHEAP.hash(password)}}}


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLStore]:
    store = SQLStore(f"sqlite:///{tmp_path / 'consumers.db'}")
    yield store
    store.close()


def guarded() -> Gateway:
    return Gateway(routes=[Route("/json", plugins=[BasicAuthPlugin()])])


# -- SQLite ----------------------------------------------------------------------------------------


def test_sqlite_needs_nothing_beyond_the_package(tmp_path: Path) -> None:
    from importlib.metadata import requires

    # SQLAlchemy is a dependency of the package itself, not of an extra ...
    assert any(r.startswith("SQLAlchemy") and "extra" not in r for r in requires("consumer-auth") or [])
    # ... and a SQLite store runs with the PostgreSQL driver and the server absent.
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["psycopg"] = sys.modules["uvicorn"] = None  # importing either now fails
        from consumer_auth import Gateway, RequestFacts
        from consumer_auth.store import SQLStore
        store = SQLStore("sqlite:///{tmp_path / "embedded.db"}")
        store.put_resource("consumers", "alex", {{"plugins": {{"basic-auth": {{"username": "alex", "password": "123456"}}}}}})
        store.put_resource("routes", "json", {{"uri": "/json", "plugins": {{"basic-auth": {{}}}}}})
        gateway = Gateway.from_store("sqlite:///{tmp_path / "embedded.db"}")
        print(gateway.decide_now(RequestFacts("GET", "/json", None, ("Basic YWxleDoxMjM0NTY=",))).consumer.username)
        gateway.close()
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "alex"


def test_writes_advance_the_revision_and_keep_creation_order(sqlite_store: SQLStore) -> None:
    assert sqlite_store.revision() == 0
    first, created = sqlite_store.put_resource("consumers", "zoe", consumer("zoe", "pw"))
    assert created
    assert (first.created, first.modified) == (1, 1)
    sqlite_store.put_resource("consumers", "adam", consumer("adam", "pw"))
    again, created = sqlite_store.put_resource("consumers", "zoe", consumer("zoe", "pw2"))
    assert not created
    assert (again.created, again.modified) == (1, 3)
    assert [r.key for r in sqlite_store.list_resources("consumers")] == ["zoe", "adam"]
    assert sqlite_store.revision() == 3
    assert sqlite_store.delete_resource("consumers", "nobody") is False
    assert sqlite_store.revision() == 3  # nothing deleted, nothing to reload


def test_clear_passwords_are_stored_as_argon2id_and_redacted(sqlite_store: SQLStore) -> None:
    resource, _ = sqlite_store.put_resource(
        "consumers", "alex", {"plugins": {"basic-auth": {"username": "alex", "password": "123456"}}}
    )
    stored = resource.document["plugins"]["basic-auth"]
    assert "password" not in stored
    assert stored["password_hash"].startswith("$argon2id$")
    assert redact(resource.document) == {"username": "alex", "plugins": {"basic-auth": {"username": "alex"}}}
    assert "argon2" not in repr(resource)
    with sqlite3.connect(sqlite_store.name.removeprefix("sqlite:///")) as raw:
        assert b"123456" not in b"".join(
            row[0].encode() for row in raw.execute("SELECT document FROM consumer_auth_resources")
        )


def test_removing_a_consumer_removes_its_credentials(sqlite_store: SQLStore) -> None:
    sqlite_store.put_resource("consumers", "a_b", {})
    sqlite_store.put_resource("consumers", "aXb", {})
    sqlite_store.put_resource("credentials", "a_b/one", consumer("ab1", "pw"))
    sqlite_store.put_resource("credentials", "aXb/one", consumer("axb1", "pw"))
    assert sqlite_store.delete_resource("consumers", "a_b")
    # '_' is not a wildcard: the other consumer keeps its credential.
    assert [r.key for r in sqlite_store.list_resources("credentials")] == ["aXb/one"]
    assert [r.key for r in sqlite_store.list_resources("credentials", "aXb")] == ["aXb/one"]


def test_an_invalid_write_changes_nothing(sqlite_store: SQLStore) -> None:
    sqlite_store.put_resource("consumers", "alex", consumer("alex", "pw"))
    with pytest.raises(
        ConfigError, match=r"^consumers/bob: duplicate basic-auth username 'alex' \(also in consumers/alex\)$"
    ):
        sqlite_store.put_resource("consumers", "bob", consumer("alex", "pw"))
    with pytest.raises(
        ConfigError, match=r"^consumers/alex/credentials/two: duplicate|^consumers/alex: duplicate"
    ):
        sqlite_store.put_resource("credentials", "alex/two", consumer("alex", "pw"))
    assert sqlite_store.get_resource("consumers", "bob") is None
    assert sqlite_store.revision() == 1


def test_a_gateway_follows_a_sqlite_store(sqlite_store: SQLStore) -> None:
    gateway = guarded()
    watcher = gateway.attach(sqlite_store, poll_interval=0.05)
    try:
        assert status(gateway, "alex", "pw") == 401
        sqlite_store.put_resource("consumers", "alex", consumer("alex", "pw"))
        assert within(10, lambda: status(gateway, "alex", "pw") == 200)
        sqlite_store.put_resource(
            "credentials",
            "alex/phone",
            {"plugins": {"basic-auth": {"username": "alex-phone", "password": "pw2"}}},
        )
        assert within(10, lambda: status(gateway, "alex-phone", "pw2") == 200)
        decision = gateway.decide_now(RequestFacts("GET", "/json", None, (basic("alex-phone", "pw2"),)))
        assert not isinstance(decision, Reject)
        assert dict(decision.identity_headers)["x-credential-identifier"] == "phone"
        sqlite_store.delete_resource("consumers", "alex")
        assert within(10, lambda: status(gateway, "alex", "pw") == 401)
        assert watcher.revision == sqlite_store.revision()
        assert gateway.routes[0].uri == "/json"  # routes stay the gateway's own
    finally:
        gateway.close()


def test_from_store_takes_routes_and_services_too(sqlite_store: SQLStore) -> None:
    sqlite_store.put_resource("consumers", "alex", consumer("alex", "pw"))
    sqlite_store.put_resource("services", "app", {"path_prefix": "/v1", "plugins": {"basic-auth": {}}})
    sqlite_store.put_resource("routes", "json", {"uri": "/json", "service_id": "app"})
    gateway = Gateway.from_store(sqlite_store, poll_interval=0.05)
    try:
        assert status(gateway, "alex", "pw", "/v1/json") == 200
        assert status(gateway, "alex", "pw", "/json") == 404
        sqlite_store.put_resource("routes", "other", {"uri": "/other", "service_id": "app"})
        assert within(10, lambda: status(gateway, "alex", "pw", "/v1/other") == 200)
    finally:
        gateway.close()


def test_invalid_stored_content_is_logged_and_skipped(
    sqlite_store: SQLStore, caplog: pytest.LogCaptureFixture
) -> None:
    sqlite_store.put_resource("consumers", "alex", consumer("alex", "pw"))
    gateway = guarded()
    watcher = gateway.attach(sqlite_store, poll_interval=3600)
    try:
        path = sqlite_store.name.removeprefix("sqlite:///")
        with sqlite3.connect(path) as raw:  # a row broken behind the store's back
            raw.execute("UPDATE consumer_auth_resources SET document = '{\"plugins\": 5}'")
            raw.execute("UPDATE consumer_auth_revision SET revision = revision + 1")
        with caplog.at_level(logging.ERROR, "consumer_auth.store"):
            assert watcher.check() is False
            assert watcher.check() is False  # the same bad revision is not read (nor logged) again
        assert status(gateway, "alex", "pw") == 200  # still the last good snapshot
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert (
            "invalid content (revision 2), still serving revision 1: consumers/alex.plugins: expected a mapping, got int"
            in errors[0]
        )
    finally:
        gateway.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("sqlite://", "in-memory SQLite", id="memory"),
        pytest.param("sqlite:///:memory:", "in-memory SQLite", id="memory-explicit"),
    ],
)
def test_unusable_store_urls(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as caught:
        open_store(url)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("mysql://u:hunter2@db/x", "store: expected a store URL", id="unsupported"),
        pytest.param("MARKERpostgresql://u:hunter2@db/x", "store: expected a store URL", id="prefixed"),
        pytest.param("consumers.ini", "store: expected a store URL", id="unknown-file"),
        pytest.param("postgresql://u:hunter2@/x", "store: expected .* and a host", id="no-host"),
        pytest.param("postgresql://u:hunter2@db:99999/x", "store: .*cannot be parsed", id="bad-port"),
    ],
)
def test_mistyped_store_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        open_store(url)
    assert "hunter2" not in str(caught.value)


def test_store_urls_choose_the_store(tmp_path: Path) -> None:
    assert isinstance(open_store(tmp_path / "g.yaml"), FileStore)
    assert isinstance(open_store(f"file://{tmp_path / 'g.json'}"), FileStore)
    sql = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    assert isinstance(sql, SQLStore)
    postgres = open_store("postgresql://gateway:hunter2@127.0.0.1/db?schema=edge")
    assert isinstance(postgres, SQLStore)
    assert "hunter2" not in postgres.name
    assert "hunter2" not in repr(postgres)
    assert postgres.schema == "edge"
    assert postgres.channel == "consumer_auth:edge"


def test_an_unreachable_postgresql_is_unavailable_without_leaking_the_password() -> None:
    store = SQLStore("postgresql://gateway:hunter2@127.0.0.1:1/db", connect_timeout=1)
    with pytest.raises(StoreUnavailableError) as caught:
        store.revision()
    assert "hunter2" not in str(caught.value)
    store.close()


# -- config file -------------------------------------------------------------------------------------


def write_atomically(path: Path, document: object) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document))
    os.replace(temporary, path)


def file_config(password: str, login: str = "alex") -> dict[str, Any]:
    return {
        "consumers": [
            {"username": "alex", "plugins": {"basic-auth": {"username": login, "password": password}}}
        ],
        "routes": [{"uri": "/json", "plugins": {"basic-auth": {}}}],
    }


def test_a_file_store_reloads_and_a_bad_file_keeps_the_last_good_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gateway.json"
    write_atomically(path, file_config("first-secret"))
    gateway = Gateway.from_store(FileStore(path, poll_interval=0.02))
    try:
        assert status(gateway, "alex", "first-secret") == 200
        write_atomically(path, file_config("second-secret"))
        assert within(10, lambda: status(gateway, "alex", "second-secret") == 200)

        with caplog.at_level(logging.INFO, "consumer_auth.store"):
            broken = file_config("third-secret")
            broken["routes"][0]["plugins"]["basic-auth"]["hide_credentials"] = "yes"
            write_atomically(path, broken)
            expected = "routes[0].plugins.basic-auth.hide_credentials: expected a boolean, got 'yes'"
            assert within(10, lambda: any(expected in r.getMessage() for r in caplog.records))
            assert status(gateway, "alex", "second-secret") == 200  # the last good config

            path.write_text("consumers: [")  # not even YAML/JSON
            assert within(10, lambda: any("invalid JSON" in r.getMessage() for r in caplog.records))
            assert status(gateway, "alex", "second-secret") == 200

            write_atomically(path, file_config("fourth-secret"))
            assert within(10, lambda: status(gateway, "alex", "fourth-secret") == 200)
        assert status(gateway, "alex", "second-secret") == 401
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "secret" not in logged
        # Revisions read as a time and a size, counts in the singular when there is one.
        version = r"the file of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC \(\d+ bytes\)"
        assert re.search(rf"gateway\.json: {version} in force \(1 consumer, 1 route\)$", logged, re.M)
        assert re.search(rf"invalid content \({version}\), still serving {version}: routes\[0\]", logged)
        assert not re.search(r"\d{16}", logged)  # no raw nanosecond timestamps
    finally:
        gateway.close()


def test_a_missing_file_is_an_outage_not_an_empty_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps(file_config("pw")))
    gateway = Gateway.from_store(FileStore(path, poll_interval=0.02))
    try:
        with caplog.at_level(logging.WARNING, "consumer_auth.store"):
            moved = tmp_path / "elsewhere.yaml"
            path.rename(moved)
            assert within(10, lambda: any("cannot read the store" in r.getMessage() for r in caplog.records))
            assert status(gateway, "alex", "pw") == 200
            moved.rename(path)
            assert within(10, lambda: any("answers again" in r.getMessage() for r in caplog.records))
        warnings = [r.getMessage() for r in caplog.records]
        assert sum("cannot read the store" in m for m in warnings) == 1
    finally:
        gateway.close()


def test_a_static_rule_holds_for_a_watched_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.json"
    document = file_config("pw")
    document["routes"][0]["plugins"]["basic-auth"]["anonymous_consumer"] = "guest"
    write_atomically(path, document)
    with pytest.raises(ConfigError, match="anonymous_consumer: no consumer named 'guest'"):
        Gateway.from_store(FileStore(path))


# -- outages ----------------------------------------------------------------------------------------


class FlakyStore:
    """A store in memory that can be made unreachable."""

    name = "flaky"
    default_poll_interval = 0.01

    def __init__(self, gateway_consumers: list[str]) -> None:
        self.consumers = gateway_consumers
        self.up = True
        self.counter = 1
        self.failures = 0

    def _check(self) -> None:
        if not self.up:
            self.failures += 1
            raise StoreUnavailableError("connection refused")

    def revision(self) -> Hashable:
        self._check()
        return self.counter

    def load(self) -> Snapshot:
        self._check()
        from consumer_auth import Consumer

        return Snapshot(self.counter, tuple(Consumer(n, password="pw") for n in self.consumers))

    def wait_for_change(self, timeout: float, wake: threading.Event) -> None:
        wake.wait(timeout)

    def after_fork(self) -> None:
        pass

    def close(self) -> None:
        pass


class RecordedWaits(threading.Event):
    """An event that remembers the timeout of every wait on it (the watcher's polls and back-offs)."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.timeouts.append(timeout)
        return super().wait(timeout)


def test_an_outage_keeps_the_snapshot_logs_once_each_way_backs_off_and_catches_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore(["alex"])
    gateway = guarded()
    with caplog.at_level(logging.INFO, "consumer_auth.store"):
        watcher = StoreWatcher(gateway, store, poll_interval=0.01, max_backoff=0.2)
        waits = RecordedWaits()
        watcher._wake = waits
        watcher.start()
        try:
            store.up = False
            assert within(10, lambda: store.failures >= 5)
            assert status(gateway, "alex", "pw") == 200
            assert watcher.available is False

            store.consumers, store.counter = ["bob"], 2  # changed while unreachable
            store.up = True
            assert within(10, lambda: status(gateway, "bob", "pw") == 200)
            assert status(gateway, "alex", "pw") == 401
        finally:
            watcher.stop()
    # Backing off: after each failed try the watcher waits 0.25 s, doubling up to max_backoff (0.2 here),
    # never just the 0.01 s poll interval.
    backoffs = [timeout for timeout in waits.timeouts if timeout != 0.01]
    assert len(backoffs) >= 5
    assert backoffs[0] == 0.25
    assert set(backoffs[1:]) <= {0.2, None}  # None: stop() waking the thread
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot read the store" in m for m in messages) == 1
    assert sum("answers again" in m for m in messages) == 1


def test_a_watcher_follows_the_store_again_in_a_forked_worker(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'consumers.db'}"
    code = textwrap.dedent(
        f"""
        import os, time
        from consumer_auth import BasicAuthPlugin, Gateway, Route
        from consumer_auth.store import SQLStore

        store = SQLStore("{url}")
        store.put_resource("consumers", "alex", {{}})
        gateway = Gateway(routes=[Route("/json", plugins=[BasicAuthPlugin()])])
        gateway.attach("{url}", poll_interval=0.02)
        pid = os.fork()  # as a pre-forking server does after importing the app
        if pid == 0:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if {{c.username for c in gateway.consumers}} == {{"alex", "bob"}}:
                    os._exit(0)
                time.sleep(0.02)
            os._exit(3)
        store.put_resource("consumers", "bob", {{}})
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"  # the child applied a change made after the fork


def test_a_reload_rebuilds_only_the_consumers_that_changed(sqlite_store: SQLStore) -> None:
    sqlite_store.put_resource("consumers", "alex", consumer("alex", "pw"))
    sqlite_store.put_resource("consumers", "bob", consumer("bob", "pw"))
    first = {c.username: c for c in sqlite_store.load().consumers}
    sqlite_store.put_resource("credentials", "bob/phone", consumer("bob-phone", "pw"))
    second = {c.username: c for c in sqlite_store.load().consumers}
    assert second["alex"] is first["alex"]
    assert second["bob"] is not first["bob"]
    assert [c.username for c in second["bob"].credentials] == ["bob", "bob-phone"]


def test_routes_from_a_file_and_consumers_from_a_store(sqlite_store: SQLStore, tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(
        textwrap.dedent(
            """
            profile: apisix-3
            routes:
              - uri: /json
                plugins:
                  basic-auth: {anonymous_consumer: guest}
            """
        )
    )
    sqlite_store.put_resource("consumers", "guest", {})
    sqlite_store.put_resource("consumers", "alex", consumer("alex", "pw"))
    gateway = Gateway.from_file(path, store=sqlite_store, poll_interval=0.02)
    try:
        assert gateway.profile.value == "apisix-3"
        assert status(gateway, "alex", "pw") == 200
        sqlite_store.delete_resource("consumers", "guest")  # removed at run time: 401, as SPEC §2.4 says
        assert within(10, lambda: status(gateway, "nobody", "pw") == 401)
    finally:
        gateway.close()

    with_consumers = tmp_path / "both.yaml"
    with_consumers.write_text(json.dumps(file_config("pw")))
    with pytest.raises(ConfigError, match="^consumers: the consumers come from the store"):
        Gateway.from_file(with_consumers, store=sqlite_store)
