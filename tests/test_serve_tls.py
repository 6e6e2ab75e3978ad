"""TLS termination in ``consumer-auth serve`` (``--ssl-certfile/--ssl-keyfile`` or ``server:``): the guide's
answers over https, ``X-Forwarded-Proto: https``, the server limits still in force, mistakes named."""

from __future__ import annotations

import copy
import http.client
import json
import socket
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import yaml

import configs
from proxy_servers import CONSUMER_AUTH, Process, UpstreamServer, start_upstream
from support import basic

GUIDE_401 = [
    (None, b'{"message":"Missing authorization in request"}\n'),
    (("wrong-user", "wrong-password"), b'{"message":"Invalid user key in authorization"}\n'),
    (("alex", "wrong-password"), b'{"message":"Password is error"}\n'),
]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def certificate(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("serve-tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    cert.private_key_pem.write_to_path(str(keyfile))
    with certfile.open("wb") as out:
        for pem in cert.cert_chain_pems:
            out.write(pem.bytes())
    return str(certfile), str(keyfile)


@pytest.fixture(scope="module")
def upstream() -> UpstreamServer:
    return start_upstream(name="echo")


def client_context(ca: trustme.CA, alpn: list[str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def config_file(tmp_path: Path, upstream: UpstreamServer, server: dict[str, Any] | None = None) -> Path:
    document: dict[str, Any] = copy.deepcopy(configs.GUIDE)
    document["services"][0]["upstream"] = upstream.url
    document["routes"].append(
        {"id": "upload", "service_id": "basic-auth-app", "uri": "/upload", "plugins": {"basic-auth": {}}}
    )
    if server is not None:
        document["server"] = server
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def serve(*args: str) -> tuple[Process, int]:
    process = Process([CONSUMER_AUTH, "serve", *args, "--port", "0"])
    return process, process.uvicorn_port()


def get(
    port: int, context: ssl.SSLContext, credentials: tuple[str, str] | None
) -> tuple[int, bytes, dict[str, str]]:
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    try:
        headers = {"Host": "example.com"}
        if credentials is not None:
            headers["Authorization"] = basic(*credentials)
        connection.request("GET", "/v1/json", headers=headers)
        response = connection.getresponse()
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


def assert_guide_over_https(port: int, ca: trustme.CA) -> None:
    context = client_context(ca)
    for credentials, body in GUIDE_401:
        status, got, headers = get(port, context, credentials)
        assert (status, got) == (401, body)
        assert headers["content-length"] == str(len(body))
    status, got, _ = get(port, context, ("alex", "123456"))
    assert status == 200
    document = json.loads(got)
    assert document["consumer"] == "alex"
    assert document["headers"]["x-forwarded-proto"] == "https"
    assert document["headers"]["x-forwarded-port"] == str(port)


def test_serve_terminates_tls_from_the_command_line(
    tmp_path: Path, upstream: UpstreamServer, certificate: tuple[str, str], ca: trustme.CA
) -> None:
    certfile, keyfile = certificate
    process, port = serve(
        "--config", str(config_file(tmp_path, upstream)), "--ssl-certfile", certfile, "--ssl-keyfile", keyfile
    )
    assert any("running on https://" in line for line in process.stderr)
    assert_guide_over_https(port, ca)
    # Clear text on the TLS port is not served.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /v1/json HTTP/1.1\r\nHost: example.com\r\n\r\n")
        assert not sock.recv(4096).startswith(b"HTTP/1.1 200")
    assert process.terminate() == 0


def test_serve_terminates_tls_from_the_server_section(
    tmp_path: Path, upstream: UpstreamServer, certificate: tuple[str, str], ca: trustme.CA
) -> None:
    certfile, keyfile = certificate
    config = config_file(tmp_path, upstream, {"ssl_certfile": certfile, "ssl_keyfile": keyfile})
    process, port = serve("--config", str(config))
    assert_guide_over_https(port, ca)
    assert process.terminate() == 0


def test_serve_over_tls_keeps_the_server_limits(
    tmp_path: Path, upstream: UpstreamServer, certificate: tuple[str, str], ca: trustme.CA
) -> None:
    certfile, keyfile = certificate
    server = {"ssl_certfile": certfile, "ssl_keyfile": keyfile, "max_headers": 10}
    process, port = serve("--config", str(config_file(tmp_path, upstream, server)))
    context = client_context(ca, ["http/1.1"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"
        head = "".join(f"X-Field-{i}: {i}\r\n" for i in range(20))
        sock.sendall(f"GET /v1/json HTTP/1.1\r\nHost: example.com\r\n{head}\r\n".encode())
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert answer.endswith(b'{"error_msg":"431 Request Header Fields Too Large"}\n')
    assert process.terminate() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--ssl-certfile", "/nonexistent/cert.pem", "--ssl-keyfile", "/nonexistent/key.pem"],
            "consumer-auth: error: --ssl-certfile: cannot read '/nonexistent/cert.pem' (No such file or directory)",
            id="missing-file",
        ),
        pytest.param(
            ["--ssl-certfile", "{keyfile}", "--ssl-keyfile", "{keyfile}"],
            "consumer-auth: error: --ssl-certfile: '{keyfile}' and '{keyfile}' are not a PEM certificate",
            id="key-as-certificate",
        ),
    ],
)
def test_serve_names_a_certificate_mistake(
    args: list[str], message: str, tmp_path: Path, upstream: UpstreamServer, certificate: tuple[str, str]
) -> None:
    keyfile = certificate[1]
    args = [arg.format(keyfile=keyfile) for arg in args]
    process = Process([CONSUMER_AUTH, "serve", "--config", str(config_file(tmp_path, upstream)), *args])
    assert process.proc.wait(30) == 1
    process.wait_for(r"error", process.stderr)
    assert process.stderr[0].startswith(message.format(keyfile=keyfile))


def test_the_server_section_names_a_certificate_mistake(
    tmp_path: Path, upstream: UpstreamServer, certificate: tuple[str, str]
) -> None:
    config = config_file(tmp_path, upstream, {"ssl_certfile": certificate[0]})
    process = Process([CONSUMER_AUTH, "serve", "--config", str(config)])
    assert process.proc.wait(30) == 1
    process.wait_for(r"error", process.stderr)
    assert process.stderr[0] == "consumer-auth: error: server.ssl_keyfile: required with ssl_certfile"


def test_one_certificate_option_alone_is_a_usage_error(tmp_path: Path, upstream: UpstreamServer) -> None:
    process = Process(
        [CONSUMER_AUTH, "serve", "--config", str(config_file(tmp_path, upstream)), "--ssl-certfile", "x.pem"]
    )
    assert process.proc.wait(30) == 2
    process.wait_for("go together", process.stderr)


# -- HTTP/2 -----------------------------------------------------------------------------------------


def test_serve_answers_the_guide_over_http2(
    tmp_path: Path, upstream: UpstreamServer, certificate: tuple[str, str], ca: trustme.CA
) -> None:
    certfile, keyfile = certificate
    process, port = serve(
        "--config", str(config_file(tmp_path, upstream)), "--ssl-certfile", certfile, "--ssl-keyfile", keyfile
    )
    with httpx.Client(http2=True, verify=client_context(ca), base_url=f"https://127.0.0.1:{port}") as client:
        for credentials, body in GUIDE_401:
            auth = {"Authorization": basic(*credentials)} if credentials else {}
            response = client.get("/v1/json", headers={"Host": "example.com", **auth})
            assert response.http_version == "HTTP/2"
            assert (response.status_code, response.content) == (401, body)
            assert response.headers["content-length"] == str(len(body))
        response = client.get(
            "/v1/json", headers={"Host": "example.com", "Authorization": basic("alex", "123456")}
        )
        assert (response.http_version, response.status_code) == ("HTTP/2", 200)
        document = json.loads(response.content)
        assert document["consumer"] == "alex"
        assert document["headers"]["x-forwarded-proto"] == "https"
        assert document["headers"]["host"] == "example.com"
        alex = {"Host": "example.com", "Authorization": basic("alex", "123456")}
        # A body without Content-Length (HTTP/2 framing) reaches the HTTP/1.1 upstream whole, past the
        # 64 KiB flow-control window.
        upload = client.post("/v1/upload", headers=alex, content=iter([b"a" * 70000, b"b" * 70000]))
        assert upload.status_code == 200
        received = json.loads(upload.content)
        assert received["body"] == "a" * 70000 + "b" * 70000
        assert received["headers"]["transfer-encoding"] == "chunked"
        # A refusal before the body was read leaves the connection usable.
        refused = client.post("/v1/json", headers=alex, content=iter([b"c" * 70000, b"d" * 70000]))
        assert refused.status_code == 404
        assert client.get("/v1/json", headers=alex).status_code == 200
    process.wait_for(r'"GET /v1/json" 200 .* route=json consumer=alex', process.stdout)
    assert process.terminate() == 0
