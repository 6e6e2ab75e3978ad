"""The ``consumer-auth`` command: ``serve`` and ``demo`` as real processes, ``check`` and ``hash-password``."""

from __future__ import annotations

import copy
import http.client
import io
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

import configs
from consumer_auth import cli
from consumer_auth.passwords import verifier_from_hash
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


def test_serve_with_two_workers(tmp_path: Path, upstream: UpstreamServer) -> None:
    process, port = serve("--config", str(guide_config(tmp_path, upstream.url)), workers=2)
    assert_guide(port)
    assert process.terminate() == 0


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


def test_check_notes_routes_without_upstream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "--config", str(guide_config(tmp_path, None))]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "note: routes[0] 'json' has no upstream: `consumer-auth serve` then needs --upstream"
    )


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


def test_serve_without_the_server_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if it were not installed
    path = guide_config(tmp_path, "http://127.0.0.1:9001")
    assert cli.main(["serve", "--config", str(path)]) == 1
    assert capsys.readouterr().err == (
        "consumer-auth: error: this command needs uvicorn: pip install 'consumer-auth[server]'\n"
    )
    assert cli.main(["demo"]) == 1
