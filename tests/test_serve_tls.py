"""TLS termination in ``consumer-auth serve`` (``--ssl-certfile/--ssl-keyfile`` or ``server:``): the guide's
answers over https, ``X-Forwarded-Proto: https``, the server limits still in force, mistakes named."""

from __future__ import annotations

import copy
import http.client
import json
import socket
import ssl
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import httpx
import pytest
import trustme
import yaml

import configs
from consumer_auth._h2 import MAX_RESETS, MAX_STREAMS
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


class H2Client:
    """A raw HTTP/2 client (the ``h2`` library over a TLS socket) for what httpx would not send."""

    def __init__(self, port: int, ca: trustme.CA) -> None:
        context = client_context(ca, ["h2"])
        self.sock = context.wrap_socket(
            socket.create_connection(("127.0.0.1", port), timeout=30), server_hostname="127.0.0.1"
        )
        assert self.sock.selected_alpn_protocol() == "h2"
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None, validate_outbound_headers=False)
        )
        self.conn.initiate_connection()
        self.flush()
        self.settings: dict[int, int] = {}
        self.terminated: h2.events.ConnectionTerminated | None = None

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def request(self, path: str, headers: list[tuple[str, str]] = (), end: bool = True) -> int:  # type: ignore[assignment]
        stream_id = self.conn.get_next_available_stream_id()
        pseudo = [(":method", "GET"), (":scheme", "https"), (":authority", "example.com"), (":path", path)]
        self.conn.send_headers(stream_id, [*pseudo, *headers], end_stream=end)
        self.flush()
        return stream_id

    def events(self) -> list[h2.events.Event] | None:
        """The events of the next read (``None`` when the server closed the connection)."""
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            return None
        events = self.conn.receive_data(data)
        for event in events:
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self.settings.update({int(k): v.new_value for k, v in event.changed_settings.items()})
            if isinstance(event, h2.events.ConnectionTerminated):
                self.terminated = event
        self.flush()
        return events

    def response(self, stream_id: int) -> tuple[int, bytes]:
        status, body = 0, b""
        while True:
            events = self.events()
            if events is None:
                raise AssertionError("connection closed before the response ended")
            for event in events:
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id:
                    body += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                    return status, body

    def closed(self) -> h2.events.ConnectionTerminated | None:
        """Read until the server closes; its GOAWAY, if it sent one."""
        while self.events() is not None:
            pass
        return self.terminated

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def limited(
    tmp_path_factory: pytest.TempPathFactory, upstream: UpstreamServer, certificate: tuple[str, str]
) -> Iterator[int]:
    """serve over TLS with small limits and timeouts."""
    certfile, keyfile = certificate
    server = {
        "ssl_certfile": certfile,
        "ssl_keyfile": keyfile,
        "max_headers": 10,
        "max_url_bytes": 256,
        "max_header_bytes": 4096,
        "header_timeout": 1,
        "body_timeout": 1,
        "keep_alive_timeout": 1,
    }
    process, port = serve("--config", str(config_file(tmp_path_factory.mktemp("limited"), upstream, server)))
    yield port
    process.terminate()


def test_http2_settings_announce_the_limits(limited: int, ca: trustme.CA) -> None:
    client = H2Client(limited, ca)
    try:
        stream = client.request("/v1/json")
        assert client.response(stream)[0] == 401
        assert client.settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == MAX_STREAMS
        assert client.settings[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] == 4096
        assert client.settings[h2.settings.SettingCodes.ENABLE_PUSH] == 0
    finally:
        client.close()


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        pytest.param("/v1/json", [(f"x-field-{i}", "1") for i in range(11)], 431, id="too-many-fields"),
        pytest.param("/v1/" + "a" * 300, [], 414, id="long-target"),
        pytest.param("/v1/json", [("x-big", "v" * 3000), ("x-big-2", "v" * 1500)], 431, id="head-too-large"),
    ],
)
def test_http2_refusals_answer_like_http1_and_keep_the_connection(
    limited: int, ca: trustme.CA, path: str, headers: list[tuple[str, str]], status: int
) -> None:
    client = H2Client(limited, ca)
    try:
        stream = client.request(path, headers)
        answer = client.response(stream)
        assert answer == (
            status,
            json.dumps({"error_msg": f"{status} {HTTPStatus(status).phrase}"}, separators=(",", ":")).encode()
            + b"\n",
        )
        stream = client.request("/v1/json")  # the connection still serves
        assert client.response(stream)[0] == 401
    finally:
        client.close()


@pytest.mark.parametrize(
    "hosts",
    [
        pytest.param([("host", "other.example")], id="host-disagrees-with-authority"),
        pytest.param([("host", "example.com"), ("host", "example.com")], id="two-hosts"),
    ],
)
def test_http2_ambiguous_host_is_refused_as_malformed(
    limited: int, ca: trustme.CA, hosts: list[tuple[str, str]]
) -> None:
    """SPEC 8: the gateway and the app never read different hosts. Over HTTP/2 such a request is
    malformed (RFC 9113 8.3.1): the h2 library refuses it with PROTOCOL_ERROR before any decision."""
    client = H2Client(limited, ca)
    try:
        client.request("/v1/json", hosts)
        terminated = client.closed()
        assert terminated is not None
        assert terminated.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    finally:
        client.close()


def test_http2_host_that_agrees_with_authority_is_served(limited: int, ca: trustme.CA) -> None:
    client = H2Client(limited, ca)
    try:
        stream = client.request("/v1/json", [("host", "example.com")])
        assert client.response(stream)[0] == 401  # the guarded route, decided as usual
    finally:
        client.close()


def test_http2_idle_connection_is_closed(limited: int, ca: trustme.CA) -> None:
    client = H2Client(limited, ca)
    try:
        terminated = client.closed()  # nothing sent: the header timeout (1 s) closes it
        assert terminated is not None
        assert terminated.error_code == h2.errors.ErrorCodes.NO_ERROR
    finally:
        client.close()


def test_http2_stalled_body_is_408(limited: int, ca: trustme.CA) -> None:
    client = H2Client(limited, ca)
    try:
        stream = client.request("/v1/upload", [("authorization", basic("alex", "123456"))], end=False)
        client.conn.send_data(stream, b"part of a body")
        client.flush()
        assert client.response(stream) == (408, b'{"error_msg":"408 Request Timeout"}\n')
    finally:
        client.close()


def test_http2_rapid_reset_costs_the_connection(limited: int, ca: trustme.CA) -> None:
    client = H2Client(limited, ca)
    try:
        for _ in range(MAX_RESETS + 1):
            stream = client.conn.get_next_available_stream_id()
            client.conn.send_headers(
                stream,
                [
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":authority", "example.com"),
                    (":path", "/v1/json"),
                ],
            )
            client.conn.reset_stream(stream)
        client.flush()
        terminated = client.closed()
        assert terminated is not None
        assert terminated.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    finally:
        client.close()


def test_every_worker_serves_tls_and_http2(
    tmp_path: Path, upstream: UpstreamServer, certificate: tuple[str, str], ca: trustme.CA
) -> None:
    certfile, keyfile = certificate
    config = str(config_file(tmp_path, upstream))
    process = Process(
        [CONSUMER_AUTH, "serve", "--config", config, "--port", "0", "--workers", "2",
         "--ssl-certfile", certfile, "--ssl-keyfile", keyfile]
    )  # fmt: skip
    port = process.uvicorn_port(workers=2)
    alex = {"Host": "example.com", "Authorization": basic("alex", "123456")}
    for http2 in (False, True):
        with httpx.Client(
            http1=not http2, http2=http2, verify=client_context(ca), base_url=f"https://127.0.0.1:{port}"
        ) as client:
            versions = {
                (r.http_version, r.status_code)
                for r in (client.get("/v1/json", headers=alex) for _ in range(4))
            }
            assert versions == {("HTTP/2" if http2 else "HTTP/1.1", 200)}
    assert process.terminate() == 0
