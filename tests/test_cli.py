"""The ``consumer-auth`` command: ``serve`` and ``demo`` as real processes, ``check`` and ``hash-password``."""

from __future__ import annotations

import copy
import http.client
import importlib.metadata
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import argon2
import pytest
import yaml

import configs
import consumer_auth
from consumer_auth import cli
from consumer_auth.sansio.passwords import verifier_from_hash
from consumer_auth.store import SQLStore
from proxy_servers import CONSUMER_AUTH, Handler, Process, UpstreamServer, request, start_upstream
from support import basic

TEXT_PLAIN = "text/plain; charset=utf-8"
SLIDES = b'{"slideshow": {"title": "Sample Slide Show"}}\n'

# The guide's four curl commands: credentials, then status, body and WWW-Authenticate of the answer.
GUIDE = [
    (None, 401, b'{"message":"Missing authorization in request"}\n', "Basic realm='.'"),
    (("alex", "123456"), 200, SLIDES, None),
    (("wrong-user", "wrong-password"), 401, b'{"message":"Invalid user key in authorization"}\n', None),
    (("alex", "wrong-password"), 401, b'{"message":"Password is error"}\n', None),
]


def slideshow(handler: Handler) -> None:
    handler.answer(200, SLIDES, [("Access-Control-Allow-Origin", "*")])


@pytest.fixture(scope="module")
def upstream() -> UpstreamServer:
    return start_upstream(slideshow, "httpbin")


def guide_config(tmp_path: Path, upstream: str | None, **changes: Any) -> Path:
    """The SPEC §6 YAML of the guide, with its upstream at ``upstream`` (removed when ``None``)."""
    document: dict[str, Any] = {**copy.deepcopy(configs.GUIDE), **changes}
    document["services"][0]["upstream"] = upstream
    if upstream is None:
        del document["services"][0]["upstream"]
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def ask(port: int, credentials: tuple[str, str] | None) -> Any:
    headers = [("Host", "example.com")]
    if credentials is not None:
        headers.append(("Authorization", basic(*credentials)))
    return request(port, "GET", "/v1/json", headers)


def assert_guide(port: int) -> None:
    for credentials, status, body, challenge in GUIDE:
        reply = ask(port, credentials)
        assert (reply.status, reply.body) == (status, body)
        assert reply.headers.get("www-authenticate") == challenge
        assert reply.headers["content-type"] == (TEXT_PLAIN if status == 401 else "application/json")
        assert reply.headers["content-length"] == str(len(body))


def serve(*args: str, workers: int = 1) -> tuple[Process, int]:
    process = Process([CONSUMER_AUTH, "serve", *args, "--port", "0", "--workers", str(workers)])
    return process, process.uvicorn_port(workers)


# -- serve ------------------------------------------------------------------------------------------


def test_serve_answers_the_guide_and_logs_one_line_per_request(
    tmp_path: Path, upstream: UpstreamServer
) -> None:
    process, port = serve("--config", str(guide_config(tmp_path, upstream.url)))
    assert_guide(port)
    lines = [process.wait_for(rf"GET /v1/json\" {status} ", process.stdout) for _, status, _, _ in GUIDE]
    assert len(lines) == 4
    process.wait_for(r"route=json consumer=alex upstream=127\.0\.0\.1:\d+$", process.stdout)
    # A rejection on a matched route names the route too (no consumer, no upstream).
    process.wait_for(r'"GET /v1/json" 401 .* route=json consumer=- upstream=-$', process.stdout)
    assert process.terminate() == 0
    assert len([line for line in process.stdout if '"GET /v1/json"' in line]) == 4
    logged = "\n".join(process.stdout + process.stderr)
    for secret in ("123456", "wrong-password", basic("alex", "123456").split()[1], "uthorization"):
        assert secret not in logged


def test_serve_under_20_concurrent_clients(tmp_path: Path, upstream: UpstreamServer) -> None:
    process, port = serve("--config", str(guide_config(tmp_path, upstream.url)))

    def client(_: int) -> None:
        for _ in range(3):
            assert_guide(port)

    with ThreadPoolExecutor(20) as pool:
        list(pool.map(client, range(20)))
    assert process.terminate() == 0


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_serve_and_demo_run_without_uvicorn_or_aiohttp(
    tmp_path: Path, upstream: UpstreamServer, command: str
) -> None:
    """The ``server`` extra has neither: serve runs on the project's own front, the demo's stand-in too."""
    blocked = "import sys; sys.modules.update(uvicorn=None, aiohttp=None); "
    run = "from consumer_auth.cli import main; sys.exit(main(sys.argv[1:]))"
    args = ["--config", str(guide_config(tmp_path, upstream.url))] if command == "serve" else []
    process = Process([sys.executable, "-c", blocked + run, command, *args, "--port", "0"])
    port = process.uvicorn_port()
    reply = ask(port, ("alex", "123456"))
    assert reply.status == 200
    assert (reply.body == SLIDES) if command == "serve" else (len(reply.body) == 429)
    assert process.terminate() == 0


def test_serve_with_two_workers(tmp_path: Path, upstream: UpstreamServer) -> None:
    process, port = serve("--config", str(guide_config(tmp_path, upstream.url)), workers=2)
    assert_guide(port)
    assert process.terminate() == 0


def _workers(process: Process) -> list[int]:
    """The worker processes ``serve --workers N`` started (the parent's children)."""
    children = Path(f"/proc/{process.proc.pid}/task/{process.proc.pid}/children").read_text()
    return [int(pid) for pid in children.split()]


def test_a_worker_that_dies_is_replaced(tmp_path: Path, upstream: UpstreamServer) -> None:
    process, port = serve("--config", str(guide_config(tmp_path, upstream.url)), workers=2)
    first, second = _workers(process)
    os.kill(first, signal.SIGKILL)
    process.wait_for(rf"worker process \[{first}\] ended with status -9: starting another", process.stderr)
    process.wait_for("Application startup complete", process.stderr, count=3)
    assert second in _workers(process)
    assert first not in _workers(process)
    assert len(_workers(process)) == 2
    for _ in range(4):  # both workers answer (the kernel spreads new connections between them)
        assert_guide(port)
    assert process.terminate() == 0


@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "two-workers"])
def test_sigterm_closes_idle_kept_alive_connections_at_once(
    tmp_path: Path, upstream: UpstreamServer, workers: int
) -> None:
    """An idle kept-alive connection does not hold the shutdown until its keep-alive timeout or the
    graceful timeout (an hour each here: the test would time out waiting for the exit)."""
    path = str(guide_config(tmp_path, upstream.url, server={"keep_alive_timeout": 3600}))
    process, port = serve("--config", path, "--graceful-timeout", "3600", workers=workers)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/v1/json", headers={"Host": "example.com"})
    response = connection.getresponse()
    assert (response.status, response.read()) == (401, b'{"message":"Missing authorization in request"}\n')
    assert response.getheader("connection") is None  # kept alive
    assert process.terminate() == 0
    assert connection.sock is not None
    assert connection.sock.recv(1) == b""  # closed by the server, with nothing more to say
    connection.close()


def test_sigterm_lets_requests_in_flight_finish(tmp_path: Path) -> None:
    arrived, release = threading.Event(), threading.Event()

    def slow(handler: Handler) -> None:
        arrived.set()
        release.wait(30)
        slideshow(handler)

    slow_upstream = start_upstream(slow, "slow-httpbin")
    process, port = serve("--config", str(guide_config(tmp_path, slow_upstream.url)))
    outcome: list[Any] = []
    client = threading.Thread(target=lambda: outcome.append(ask(port, ("alex", "123456"))))
    client.start()
    try:
        assert arrived.wait(30)
        process.proc.send_signal(15)
        process.wait_for("Shutting down", process.stderr)
    finally:
        release.set()
    client.join(30)
    assert outcome
    assert (outcome[0].status, outcome[0].body) == (200, SLIDES)
    assert process.terminate() == 0


def test_serve_logs_an_aborted_response_on_one_line(tmp_path: Path) -> None:
    def half(handler: Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        handler.wfile.write(b"x" * 1000)
        handler.reset()

    process, port = serve("--config", str(guide_config(tmp_path, start_upstream(half, "half").url)))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(
        "GET", "/v1/json", headers={"Host": "example.com", "Authorization": basic("alex", "123456")}
    )
    response = connection.getresponse()
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        response.read()
    connection.close()
    process.wait_for(r"WARNING consumer_auth\.proxy: upstream broke off the response", process.stderr)
    assert_guide_unreachable_route_answers(port)
    assert process.terminate() == 0
    assert not any("Traceback" in line for line in process.stderr)


def assert_guide_unreachable_route_answers(port: int) -> None:
    reply = ask(port, None)
    assert reply.status == 401  # the worker is still there


def test_serve_refuses_an_invalid_config(tmp_path: Path) -> None:
    path = guide_config(tmp_path, "http://127.0.0.1:9", routes=[{"uri": "/json", "methods": ["FETCH"]}])
    result = subprocess.run(
        [CONSUMER_AUTH, "serve", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "consumer-auth: error: routes[0].methods[0]: expected an HTTP method in capitals, got 'FETCH'"
    )


def test_serve_needs_an_upstream_for_every_route(tmp_path: Path, upstream: UpstreamServer) -> None:
    path = guide_config(tmp_path, None)
    result = subprocess.run(
        [CONSUMER_AUTH, "serve", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "routes[0].upstream: route 'json' has no upstream" in result.stderr
    process, port = serve("--config", str(path), "--upstream", upstream.url)
    assert_guide(port)
    assert process.terminate() == 0


# -- SIGHUP -----------------------------------------------------------------------------------------


def rewrite(path: Path, text: str) -> None:
    """Replace a file atomically (a new inode), as editors and configuration tools do."""
    fresh = path.with_suffix(".new")
    fresh.write_text(text)
    os.replace(fresh, path)


def eventually(predicate: Callable[[], bool], timeout: float = 60) -> bool:
    """Whether ``predicate`` holds before ``timeout`` seconds (a generous deadline: no duration is asserted)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def with_bob(path: Path, password: str) -> str:
    document = yaml.safe_load(path.read_text())
    document["consumers"].append(
        {"username": "bob", "plugins": {"basic-auth": {"username": "bob", "password": password}}}
    )
    return yaml.safe_dump(document)


@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "two-workers"])
def test_sighup_reloads_the_config_and_a_bad_file_keeps_the_last_good_one(
    tmp_path: Path, upstream: UpstreamServer, workers: int
) -> None:
    path = guide_config(tmp_path, upstream.url)
    process, port = serve("--config", str(path), workers=workers)

    def all_answer(credentials: tuple[str, str], status: int) -> bool:  # several, so every worker answers
        return all(ask(port, credentials).status == status for _ in range(4 * workers))

    assert all_answer(("bob", "bob-secret"), 401)
    rewrite(path, with_bob(path, "bob-secret"))
    assert all_answer(("bob", "bob-secret"), 401)  # a file is read again on SIGHUP only
    process.proc.send_signal(signal.SIGHUP)
    assert eventually(lambda: all_answer(("bob", "bob-secret"), 200))
    assert_guide(port)

    good = path.read_text()
    rewrite(path, good.replace("hide_credentials: false", "hide_credentials: 'yes'"))
    process.proc.send_signal(signal.SIGHUP)
    expected = r"ERROR consumer_auth\.store: .*gateway\.yaml: invalid content .*still serving the file of .*: routes\[0\]\.plugins\.basic-auth\.hide_credentials: expected a boolean, got 'yes'$"
    process.wait_for(expected, process.stderr, timeout=60, count=workers)  # logged by every worker
    assert all_answer(("bob", "bob-secret"), 200)  # the last good configuration
    assert process.proc.poll() is None  # SIGHUP never stops the server
    assert process.terminate() == 0
    logged = "\n".join(process.stdout + process.stderr)
    assert "bob-secret" not in logged
    assert "123456" not in logged


def test_sighup_reloads_the_routes_file_next_to_a_store(tmp_path: Path, upstream: UpstreamServer) -> None:
    store_url = f"sqlite:///{tmp_path / 'consumers.db'}"
    store = SQLStore(store_url)
    store.put_resource(
        "consumers", "alex", {"plugins": {"basic-auth": {"username": "alex", "password": "123456"}}}
    )
    store.close()
    routes = tmp_path / "routes.yaml"
    guarded = {"uri": "/json", "upstream": upstream.url, "plugins": {"basic-auth": {}}}
    open_route = {
        "uri": "/open",
        "upstream": upstream.url,
        "plugins": {"basic-auth": {"anonymous_consumer": "alex"}},
    }
    routes.write_text(yaml.safe_dump({"routes": [guarded, open_route]}))
    process, port = serve("--config", str(routes), "--store", store_url)
    alex = [("Authorization", basic("alex", "123456"))]
    assert request(port, "GET", "/json", alex).status == 200
    assert request(port, "GET", "/slides", alex).status == 404
    rewrite(routes, routes.read_text().replace("uri: /json", "uri: /slides"))
    process.proc.send_signal(signal.SIGHUP)
    assert eventually(lambda: request(port, "GET", "/slides", alex).status == 200)
    assert request(port, "GET", "/json", alex).status == 404
    # The file's anonymous_consumer is a consumer of the store, not of the file: the file is still good.
    assert request(port, "GET", "/open").status == 200
    assert not any("invalid content" in line for line in process.stderr)
    assert process.terminate() == 0


# -- demo -------------------------------------------------------------------------------------------


def test_demo_answers_what_it_prints() -> None:
    process = Process([CONSUMER_AUTH, "demo", "--port", "0"])
    process.wait_for(r"^Press Ctrl\+C to stop\.$", process.stdout)
    printed = list(process.stdout)
    gateway = next(line for line in printed if line.strip().startswith("gateway ")).split()[-1]
    port = int(gateway.rsplit(":", 1)[1])
    curls = [line.strip() for line in printed if line.strip().startswith("curl ")]
    answers = [line.strip() for line in printed if line.strip().startswith("=> ")]
    assert len(curls) == len(answers) == 4
    for curl, answer in zip(curls, answers, strict=True):
        assert curl.startswith("curl -i -H 'Host: example.com' ")
        assert curl.endswith(f"{gateway}/v1/json")
        user = re.search(r"-u (\S+):(\S+)", curl)
        reply = ask(port, user.groups() if user else None)  # type: ignore[arg-type]
        status, _, said = answer[3:].partition(" ")
        assert reply.status == int(status)
        if reply.status == 401:
            assert reply.body.decode() == said.split("  (")[0] + "\n"
            challenge = re.search(r"\(WWW-Authenticate: (.*)\)$", said)
            assert reply.headers.get("www-authenticate") == (challenge.group(1) if challenge else None)
            assert reply.headers["content-type"] == TEXT_PLAIN
        else:
            assert reply.headers["content-type"] == "application/json"
            assert reply.headers["access-control-allow-origin"] == "*"
            assert len(reply.body) == 429  # httpbin's /json, as in the guide
            assert b'"title": "Sample Slide Show"' in reply.body
    assert process.terminate() == 0


def test_demo_reports_a_busy_port() -> None:
    blocker = Process([CONSUMER_AUTH, "demo", "--port", "0"])
    port = int(blocker.wait_for(r"gateway +http://127\.0\.0\.1:(\d+)$", blocker.stdout).group(1))
    result = subprocess.run(
        [CONSUMER_AUTH, "demo", "--port", str(port)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"consumer-auth: error: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in result.stderr
    assert blocker.terminate() == 0


# -- check and hash-password ------------------------------------------------------------------------


def test_check_accepts_the_guide(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "--config", str(guide_config(tmp_path, "http://127.0.0.1:9001"))]) == 0
    assert capsys.readouterr().out == "OK: 1 consumer, 1 service, 1 route (profile classic)\n"


def test_check_counts_consumer_groups_and_names_a_dangling_group_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "groups.yaml"
    config.write_text(
        "consumer_groups: [{id: free}]\n"
        "consumers: [{username: alex, group_id: free, plugins: {basic-auth: {username: alex, password: pw}}}]\n"
        "routes: [{uri: /json, upstream: 'http://127.0.0.1:9001', plugins: {basic-auth: {}}}]\n"
    )
    assert cli.main(["check", "--config", str(config)]) == 0
    assert (
        capsys.readouterr().out
        == "OK: 1 consumer (1 consumer group), 0 services, 1 route (profile classic)\n"
    )
    config.write_text(config.read_text().replace("group_id: free", "group_id: gold"))
    assert cli.main(["check", "--config", str(config)]) == 1
    assert capsys.readouterr().err == (
        "consumer-auth: error: consumers[0].group_id: no consumer group with id 'gold'\n"
    )


def test_check_notes_routes_without_upstream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "--config", str(guide_config(tmp_path, None))]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "note: routes[0] 'json' has no upstream: `consumer-auth serve` then needs --upstream"
    )


def test_check_warns_of_argon2_logins_without_brute_force_limits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hashed = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("123456")
    consumers = [
        {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password_hash": hashed}}}
    ]
    path = guide_config(tmp_path, "http://127.0.0.1:9001", consumers=consumers)
    assert cli.main(["check", "--config", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "warning: routes[0] 'json' checks argon2 passwords without brute_force limits: an internet-facing "
        "route wants brute_force with count_by: [client] (docs/security.md)"
    ]
    routes = copy.deepcopy(configs.GUIDE["routes"])
    routes[0]["plugins"]["basic-auth"]["brute_force"] = {"max_failures": 5, "count_by": ["client"]}
    path = guide_config(tmp_path, "http://127.0.0.1:9001", consumers=consumers, routes=routes)
    assert cli.main(["check", "--config", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == []


def test_check_names_the_mistake(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = guide_config(tmp_path, "http://127.0.0.1:9001")
    path.write_text(path.read_text().replace("hide_credentials: false", "hide_credentials: 'yes'"))
    assert cli.main(["check", "--config", str(path)]) == 1
    assert capsys.readouterr().err == (
        "consumer-auth: error: routes[0].plugins.basic-auth.hide_credentials: expected a boolean, got 'yes'\n"
    )


def test_check_refuses_a_login_with_a_colon_without_echoing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = guide_config(tmp_path, "http://127.0.0.1:9001")
    path.write_text(path.read_text().replace("username: alex\n", "username: alex:hunter22\n", 1))
    assert "alex:hunter22" in path.read_text()
    assert cli.main(["check", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert err == (
        "consumer-auth: error: consumers[0].plugins.basic-auth.username: must not contain ':' "
        "(RFC 7617: a client's username ends at the first ':')\n"
    )


def test_check_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["check"])
    assert exited.value.code == 2
    assert "--config" in capsys.readouterr().err


def test_check_runs_as_a_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [CONSUMER_AUTH, "check", "--config", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("consumer-auth: error: ")
    assert "missing.yaml: cannot read the file" in result.stderr


def test_hash_password_reads_stdin() -> None:
    result = subprocess.run(
        [CONSUMER_AUTH, "hash-password"], input="s3cret pass\n", capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    hashed = result.stdout.strip()
    assert hashed.startswith("$argon2id$")
    verifier = verifier_from_hash(hashed)
    assert verifier.verify("s3cret pass")
    assert not verifier.verify("s3cret pass\n")
    assert "s3cret" not in result.stdout + result.stderr


def test_hash_password_refuses_an_empty_password() -> None:
    result = subprocess.run(
        [CONSUMER_AUTH, "hash-password"], input="\n", capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr == "consumer-auth: error: an empty password never authenticates\n"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_hash_password_asks_twice_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    typed = iter(["first", "second", "same", "same"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(typed))
    assert cli.hash_password_command(None, stdin=_Terminal()) == 1  # type: ignore[arg-type]
    assert capsys.readouterr().err == "consumer-auth: error: the two passwords differ\n"
    out = io.StringIO()
    assert cli.hash_password_command(None, stdin=_Terminal(), out=out) == 0  # type: ignore[arg-type]
    assert verifier_from_hash(out.getvalue().strip()).verify("same")


def test_serve_and_demo_help_name_their_options() -> None:
    result = subprocess.run([CONSUMER_AUTH, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for option in ("--config", "--host", "--port", "--workers", "--upstream", "--graceful-timeout"):
        assert option in result.stdout


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CONSUMER_AUTH, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "command",
    ["serve", "demo", "import-htpasswd", "check", "hash-password", "consumers", "consumer-groups", "admin"],
)
def test_every_command_help_has_a_description_and_examples(command: str) -> None:
    result = run(command, "--help")
    assert result.returncode == 0
    usage, description = result.stdout.split("\n\n")[:2]
    assert usage.startswith(f"usage: consumer-auth {command}")
    assert len(description.split()) >= 8  # a sentence or two, not just the option list
    examples = result.stdout.split("examples:\n", 1)[1]
    assert examples.lstrip().startswith(f"consumer-auth {command}") or f"consumer-auth {command}" in examples


def test_import_htpasswd_help_explains_format() -> None:
    words = " ".join(run("import-htpasswd", "--help").stdout.split())
    assert "--format {yaml,json} print the consumers: document as YAML (default) or JSON" in words


def test_version() -> None:
    result = run("--version")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"consumer-auth {consumer_auth.__version__}\n",
        "",
    )
    assert consumer_auth.__version__ == importlib.metadata.version("consumer-auth")


@pytest.mark.parametrize("command", ["serve", "demo", "admin"])
@pytest.mark.parametrize(
    ("port", "shown"),
    [("80000", "80000"), ("-1", "-1"), ("http", "'http'")],
    ids=["too-high", "negative", "not-a-number"],
)
def test_a_port_out_of_range_is_refused_with_exit_1(
    command: str, port: str, shown: str, tmp_path: Path
) -> None:
    result = (
        run(command, "--config", str(tmp_path / "never-read.yaml"), "--port", port)
        if command == "serve"
        else run(command, "--store", "sqlite:///never-opened.db", "--port", port)
        if command == "admin"
        else run(command, "--port", port)
    )
    assert result.returncode == 1
    assert (
        result.stderr
        == f"consumer-auth: error: --port: expected a port number from 0 to 65535, got {shown}\n"
    )
    assert result.stdout == ""


def test_serve_reports_a_busy_port_on_one_line(tmp_path: Path, upstream: UpstreamServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = str(guide_config(tmp_path, upstream.url))
        for workers in ("1", "2"):
            result = run("serve", "--config", path, "--port", str(port), "--workers", workers)
            assert result.returncode == 1
            assert result.stderr.endswith(
                f"consumer-auth: error: cannot listen on 127.0.0.1:{port} (Address already in use); try --port\n"
            )
            assert "Traceback" not in result.stderr


def test_serve_without_the_server_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "httptools", None)  # as if it were not installed
    path = guide_config(tmp_path, "http://127.0.0.1:9001")
    assert cli.main(["serve", "--config", str(path)]) == 1
    assert capsys.readouterr().err == (
        "consumer-auth: error: this command needs httptools: pip install 'consumer-auth[server]'\n"
    )
    assert cli.main(["demo"]) == 1
