"""``consumer-auth consumers ...`` and ``consumer-auth admin``, run as real commands on a SQLite store."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from consumer_auth import BasicAuthPlugin, Gateway, Reject, RequestFacts, Route
from consumer_auth.store import SQLStore
from proxy_servers import CONSUMER_AUTH, Process, request, start_upstream
from support import basic, within

COMMAND = CONSUMER_AUTH
SECRET = "correct-horse-battery"


def cli(
    *args: str, password: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COMMAND, *args],
        input=None if password is None else password + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'consumers.db'}"


def allowed(gateway: Gateway, login: str, password: str) -> bool:
    decision = gateway.decide_now(RequestFacts("GET", "/json", None, (basic(login, password),)))
    return not isinstance(decision, Reject)


def test_add_list_passwd_remove(store_url: str) -> None:
    added = cli(
        "consumers",
        "add",
        "jack1",
        "--login",
        "jack2019",
        "--label",
        "custom_id=42",
        "--store",
        store_url,
        password=SECRET,
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout == "consumer 'jack1' added: login 'jack2019', credential id 'jack2019'\n"
    second = cli(
        "consumers",
        "add",
        "jack1",
        "--login",
        "jack2020",
        "--credential-id",
        "2020",
        "--store",
        store_url,
        password="other-pw",
    )
    assert second.returncode == 0, second.stderr
    assert cli("consumers", "add", "alex", "--store", store_url, password=SECRET).returncode == 0

    listed = cli("consumers", "list", "--store", store_url)
    assert listed.returncode == 0
    assert listed.stdout.splitlines() == [
        "CONSUMER  CREDENTIAL ID  LOGIN     CUSTOM ID",
        "jack1     jack2019       jack2019  42",
        "jack1     2020           jack2020  42",
        "alex      alex           alex",
    ]
    as_json = cli("consumers", "list", "--json", "--store", store_url)
    assert json.loads(as_json.stdout)[0]["credentials"][1] == {
        "id": "2020",
        "plugins": {"basic-auth": {"username": "jack2020"}},
    }

    gateway = Gateway(routes=[Route("/json", plugins=[BasicAuthPlugin()])])
    watcher = gateway.attach(store_url)
    try:
        assert allowed(gateway, "jack2019", SECRET)
        assert allowed(gateway, "jack2020", "other-pw")
        assert cli("consumers", "passwd", "alex", "--store", store_url, password="new-pw").stdout == (
            "password of consumer 'alex', credential 'alex' changed\n"
        )
        assert (
            cli(
                "consumers", "remove", "jack1", "--credential-id", "jack2019", "--store", store_url
            ).returncode
            == 0
        )
        watcher.check()
        assert allowed(gateway, "alex", "new-pw")
        assert not allowed(gateway, "alex", SECRET)
        assert not allowed(gateway, "jack2019", SECRET)
        assert allowed(gateway, "jack2020", "other-pw")
        assert (
            cli("consumers", "remove", "jack1", "--store", store_url).stdout == "consumer 'jack1' removed\n"
        )
        watcher.check()
        assert not allowed(gateway, "jack2020", "other-pw")
    finally:
        gateway.close()

    for result in (added, second, listed, as_json):
        assert SECRET not in result.stdout + result.stderr
        assert "argon2" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("setup", "args", "password", "message"),
    [
        pytest.param(
            [],
            ["consumers", "add", "bob", "--login", "alex"],
            SECRET,
            "consumers/bob: duplicate basic-auth username 'alex' (also in consumers/alex)",
            id="duplicate-login",
        ),
        pytest.param(
            [],
            ["consumers", "add", "alex"],
            SECRET,
            "consumer 'alex' already has credential 'alex': use 'consumers passwd'",
            id="existing-credential",
        ),
        pytest.param(
            [], ["consumers", "add", "bob"], "", "an empty password never authenticates", id="empty-password"
        ),
        pytest.param(
            [],
            ["consumers", "add", "bob", "--label", "custom_id"],
            SECRET,
            "--label 'custom_id': expected KEY=VALUE",
            id="bad-label",
        ),
        pytest.param(
            [],
            ["consumers", "add", "b b"],
            SECRET,
            "username: expected letters, digits, '_' or '-', got 'b b'",
            id="bad-name",
        ),
        pytest.param(
            [],
            ["consumers", "add", "bob", "--login", "bob:" + SECRET],
            SECRET,
            "plugins.basic-auth.username: must not contain ':' (RFC 7617: a client's username ends at the first ':')",
            id="colon-in-login",
        ),
        pytest.param(
            [], ["consumers", "remove", "nobody"], None, "no consumer named 'nobody'", id="remove-unknown"
        ),
        pytest.param(
            [], ["consumers", "passwd", "nobody"], SECRET, "no consumer named 'nobody'", id="passwd-unknown"
        ),
        pytest.param(
            [["consumers", "add", "alex", "--login", "alex-2", "--credential-id", "two"]],
            ["consumers", "passwd", "alex"],
            SECRET,
            "consumer 'alex' has several credentials (alex, two): choose one with --credential-id",
            id="passwd-ambiguous",
        ),
        pytest.param(
            [],
            ["consumers", "add", "bob", "--group", "gold"],
            SECRET,
            "--group 'gold': no consumer group with that id (add it with 'consumer-groups add')",
            id="add-to-a-missing-group",
        ),
        pytest.param(
            [["consumer-groups", "add", "free"]],
            ["consumers", "add", "alex", "--login", "alex-2", "--group", "free"],
            SECRET,
            "consumer 'alex' exists: --desc, --label and --group only apply to a new consumer (use 'consumers edit')",
            id="add-existing-to-a-group",
        ),
        pytest.param(
            [],
            ["consumers", "edit", "nobody", "--no-group"],
            None,
            "no consumer named 'nobody'",
            id="edit-unknown",
        ),
        pytest.param(
            [],
            ["consumers", "edit", "alex"],
            None,
            "nothing to change: give --group ID, --no-group or --desc TEXT",
            id="edit-nothing",
        ),
        pytest.param(
            [],
            ["consumers", "edit", "alex", "--group", "a/b"],
            None,
            "--group: expected 1 to 64 letters, digits, '_', '-' or '.', got 'a/b'",
            id="edit-bad-group",
        ),
        pytest.param(
            [["consumer-groups", "add", "free"], ["consumers", "edit", "alex", "--group", "free"]],
            ["consumer-groups", "remove", "free"],
            None,
            "can not delete this consumer group, consumer [alex] is still using it now",
            id="remove-a-group-in-use",
        ),
        pytest.param(
            [],
            ["consumer-groups", "remove", "free"],
            None,
            "no consumer group with id 'free'",
            id="remove-unknown-group",
        ),
        pytest.param(
            [],
            ["consumer-groups", "add", "a b"],
            None,
            "id: expected 1 to 64 letters, digits, '_', '-' or '.', got 'a b'",
            id="bad-group-id",
        ),
    ],
)
def test_refusals_exit_1_with_the_reason(
    store_url: str, setup: list[list[str]], args: list[str], password: str | None, message: str
) -> None:
    assert cli("consumers", "add", "alex", "--store", store_url, password=SECRET).returncode == 0
    for extra in setup:
        assert cli(*extra, "--store", store_url, password="setup-pw").returncode == 0
    before = SQLStore(store_url)
    revision = before.revision()
    result = cli(*args, "--store", store_url, password=password)
    assert result.returncode == 1
    assert result.stderr == f"consumer-auth: error: {message}\n"
    assert before.revision() == revision  # nothing changed
    before.close()


def test_consumer_groups_from_the_shell(store_url: str, tmp_path: Path) -> None:
    plugins = tmp_path / "free.yaml"
    plugins.write_text("consumer-restriction:\n  whitelist: [nobody]\n  rejected_msg: free tier\n")
    added = cli(
        "consumer-groups",
        "add",
        "free",
        "--desc",
        "the free tier",
        "--plugins",
        str(plugins),
        "--store",
        store_url,
    )
    assert (added.returncode, added.stdout) == (0, "consumer group 'free' added (consumer-restriction)\n"), (
        added.stderr
    )
    jack = cli("consumers", "add", "jack", "--group", "free", "--store", store_url, password=SECRET)
    assert jack.stdout == "consumer 'jack' added: login 'jack', credential id 'jack', group 'free'\n", (
        jack.stderr
    )
    assert cli("consumers", "add", "alex", "--store", store_url, password=SECRET).returncode == 0
    assert cli("consumers", "list", "--store", store_url).stdout.splitlines() == [
        "CONSUMER  CREDENTIAL ID  LOGIN  CUSTOM ID  GROUP",
        "jack      jack           jack              free",
        "alex      alex           alex              -",
    ]
    assert cli("consumer-groups", "list", "--store", store_url).stdout.splitlines() == [
        "GROUP  CONSUMERS  PLUGINS               DESC",
        "free   1          consumer-restriction  the free tier",
    ]
    assert json.loads(cli("consumer-groups", "list", "--json", "--store", store_url).stdout) == [
        {
            "id": "free",
            "desc": "the free tier",
            "plugins": {"consumer-restriction": {"whitelist": ["nobody"], "rejected_msg": "free tier"}},
        }
    ]

    gateway = Gateway(routes=[Route("/json", plugins=[BasicAuthPlugin()])])
    watcher = gateway.attach(store_url)
    try:
        assert not allowed(gateway, "jack", SECRET)  # the group's restriction
        assert allowed(gateway, "alex", SECRET)
        moved = cli("consumers", "edit", "alex", "--group", "free", "--store", store_url)
        assert moved.stdout == "consumer 'alex' changed: group 'free'\n"
        out = cli("consumers", "edit", "jack", "--no-group", "--desc", "left", "--store", store_url)
        assert out.stdout == "consumer 'jack' changed: in no group\n"
        watcher.check()
        assert not allowed(gateway, "alex", SECRET)
        assert allowed(gateway, "jack", SECRET)  # the stored hash was kept
        replaced = cli(
            "consumer-groups", "add", "free", "--plugins", "-", "--store", store_url, password="{}"
        )
        assert replaced.stdout == "consumer group 'free' replaced (no plugins)\n"
        watcher.check()
        assert allowed(gateway, "alex", SECRET)
    finally:
        gateway.close()
    assert cli("consumers", "edit", "alex", "--no-group", "--store", store_url).returncode == 0
    assert (
        cli("consumer-groups", "remove", "free", "--store", store_url).stdout
        == "consumer group 'free' removed\n"
    )
    assert (
        cli("consumers", "list", "--store", store_url).stdout.splitlines()[0]
        == "CONSUMER  CREDENTIAL ID  LOGIN  CUSTOM ID"
    )


def test_a_config_file_is_not_a_writable_store(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("consumers: []\n")
    result = cli("consumers", "list", "--store", str(path))
    assert result.returncode == 1
    assert "is a configuration file: edit it" in result.stderr


def test_an_unreachable_store_is_reported_without_its_password() -> None:
    result = cli("consumers", "list", "--store", "postgresql://gateway:hunter2@127.0.0.1:1/db")
    assert result.returncode == 1
    assert result.stderr.startswith("consumer-auth: error: ")
    assert "hunter2" not in result.stderr


@pytest.fixture
def admin_process(store_url: str) -> Iterator[tuple[str, str]]:
    key = "cli-admin-key"
    process = Process(
        [COMMAND, "admin", "--store", store_url, "--port", "0"], env={"CONSUMER_AUTH_ADMIN_KEY": key}
    )
    try:
        yield f"http://127.0.0.1:{process.uvicorn_port()}", key
    finally:
        process.terminate()
        process.kill()


def test_the_admin_command_serves_the_admin_api_with_its_key(admin_process: tuple[str, str]) -> None:
    url, key = admin_process
    assert httpx.get(f"{url}/apisix/admin/consumers", timeout=30).status_code == 401
    created = httpx.put(
        f"{url}/apisix/admin/consumers/alex",
        json={"plugins": {"basic-auth": {"username": "alex", "password": SECRET}}},
        headers={"X-API-KEY": key},
        timeout=30,
    )
    assert created.status_code == 201
    assert SECRET not in created.text


def test_the_admin_listener_has_the_limits_of_serve_and_believes_no_forwarded_for(store_url: str) -> None:
    process = Process(
        [COMMAND, "admin", "--store", store_url, "--port", "0"], env={"CONSUMER_AUTH_ADMIN_KEY": "k"}
    )
    try:
        port = process.uvicorn_port()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            head = b"GET /apisix/admin/consumers HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4_000_000
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                connection.sendall(head)
            assert connection.recv(65536).startswith(b"HTTP/1.1 431 ")  # refused before any 401
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            assert connection.recv(65536) == b""  # a silent connection is closed (first-byte timeout)
        answer = httpx.get(
            f"http://127.0.0.1:{port}/apisix/admin/consumers",
            headers={"X-Forwarded-For": "203.0.113.9"},
            timeout=30,
        )
        assert answer.status_code == 401
        line = process.wait_for("GET /apisix/admin/consumers", process.stderr).string
        assert "127.0.0.1" in line
        assert "203.0.113.9" not in line
    finally:
        process.terminate()
        process.kill()


def test_the_admin_access_log_believes_a_trusted_proxy_only(store_url: str) -> None:
    process = Process(
        [COMMAND, "admin", "--store", store_url, "--port", "0", "--trusted-proxy", "127.0.0.1"],
        env={"CONSUMER_AUTH_ADMIN_KEY": "k"},
    )
    try:
        port = process.uvicorn_port()
        answer = httpx.get(
            f"http://127.0.0.1:{port}/apisix/admin/routes",
            headers={"X-Forwarded-For": "198.51.100.4, 203.0.113.9"},
            timeout=30,
        )
        assert answer.status_code == 401
        line = process.wait_for("GET /apisix/admin/routes", process.stderr).string
        assert "203.0.113.9" in line  # the hop the trusted proxy (this test, on loopback) appended
        assert "198.51.100.4" not in line  # what the client itself claimed
    finally:
        process.terminate()
        process.kill()


def test_the_admin_command_needs_a_key(store_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CONSUMER_AUTH_ADMIN_KEY"}
    result = cli("admin", "--store", store_url, env=env)
    assert result.returncode == 1
    assert (
        result.stderr
        == "consumer-auth: error: set the admin key in the CONSUMER_AUTH_ADMIN_KEY environment variable\n"
    )


def test_serve_with_two_workers_follows_a_sqlite_store(store_url: str, tmp_path: Path) -> None:
    upstream = start_upstream(name="echo")
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        f"routes:\n  - uri: /json\n    upstream: {upstream.url}\n    plugins:\n      basic-auth: {{}}\n"
    )
    empty = SQLStore(store_url)  # serve follows an existing store: it never starts an empty one itself
    empty.revision()
    empty.close()
    process = Process(
        [COMMAND, "serve", "--config", str(routes), "--store", store_url, "--port", "0", "--workers", "2"]
    )
    try:
        port = process.uvicorn_port(workers=2)

        def all_answer(status: int) -> bool:  # several requests in a row, so both workers answer some
            return all(
                request(port, "GET", "/json", [("Authorization", basic("alex", SECRET))]).status == status
                for _ in range(8)
            )

        assert all_answer(401)
        assert cli("consumers", "add", "alex", "--store", store_url, password=SECRET).returncode == 0
        assert within(10, lambda: all_answer(200))
        assert cli("consumers", "remove", "alex", "--store", store_url).returncode == 0
        assert within(10, lambda: all_answer(401))
    finally:
        process.terminate()
        process.kill()


def test_serve_takes_routes_from_the_store_without_a_config(store_url: str) -> None:
    upstream = start_upstream(name="echo")
    store = SQLStore(store_url)
    store.put_resource("routes", "json", {"uri": "/json", "plugins": {"basic-auth": {}}})
    store.close()
    assert cli("consumers", "add", "alex", "--store", store_url, password=SECRET).returncode == 0
    process = Process([COMMAND, "serve", "--store", store_url, "--upstream", upstream.url, "--port", "0"])
    try:
        port = process.uvicorn_port()
        reply = request(port, "GET", "/json", [("Authorization", basic("alex", SECRET))])
        assert reply.status == 200
        assert json.loads(reply.body)["headers"]["x-consumer-username"] == "alex"
        assert request(port, "GET", "/other", [("Authorization", basic("alex", SECRET))]).status == 404
    finally:
        process.terminate()
        process.kill()


def test_serve_needs_a_config_or_a_store() -> None:
    result = cli("serve")
    assert result.returncode == 2
    assert "serve needs --config, --store, or both" in result.stderr


def test_serve_refuses_consumers_in_the_config_with_a_store(store_url: str, tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "consumers:\n  - username: alex\n    plugins:\n      basic-auth: {username: alex, password: x}\n"
        "routes:\n  - uri: /json\n    upstream: http://127.0.0.1:9\n"
    )
    result = cli("serve", "--config", str(path), "--store", store_url)
    assert result.returncode == 1
    assert result.stderr == (
        "consumer-auth: error: consumers: the consumers come from the store: remove them from the configuration\n"
    )


def test_a_mistyped_sqlite_path_is_an_error_naming_it_not_an_empty_store(tmp_path: Path) -> None:
    missing_dir = tmp_path / "missing" / "dir" / "x.db"
    for args in (
        ["consumers", "list"],
        ["consumers", "remove", "alex"],
        ["serve", "--upstream", "http://127.0.0.1:9"],
    ):
        result = cli(*args, "--store", f"sqlite:///{missing_dir}")
        assert result.returncode == 1, args
        assert result.stderr.startswith(f"consumer-auth: error: {missing_dir}: no such directory"), args
    missing_file = tmp_path / "consumers.db"
    for args in (["consumers", "list"], ["serve", "--upstream", "http://127.0.0.1:9"]):
        result = cli(*args, "--store", f"sqlite:///{missing_file}")
        assert result.returncode == 1, args
        assert result.stderr.startswith(f"consumer-auth: error: {missing_file}: no such SQLite file"), args
    assert not missing_file.exists()  # nothing was created by reading
    # A relative URL is resolved against the current directory, and the message says so.
    result = subprocess.run(
        [COMMAND, "consumers", "list", "--store", "sqlite:///consumers.db"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert f"{missing_file}: no such SQLite file" in result.stderr
    assert "relative to the current directory" in result.stderr
    # `consumers add` is the command that starts a new store.
    assert (
        cli("consumers", "add", "alex", "--store", f"sqlite:///{missing_file}", password=SECRET).returncode
        == 0
    )
    listed = cli("consumers", "list", "--store", f"sqlite:///{missing_file}")
    assert listed.returncode == 0
    assert "alex" in listed.stdout
