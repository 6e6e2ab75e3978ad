"""HTTPS upstreams (``upstream.tls``): a private CA, a wrong CA, ``verify: false``, mutual TLS and SNI,
through both proxies against a real TLS server on loopback (certificates made by trustme)."""

from __future__ import annotations

import json
import logging
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import trustme

from consumer_auth import ConfigError, Gateway
from proxy_servers import ASGIServer, TLSUpstreamServer, WSGIServer, request, start_tls_upstream
from support import basic

ALEX = [("Authorization", basic("alex", "123456")), ("Host", "example.com")]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def pki(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """PEM files: the CA, another CA, a client certificate signed by the CA and its key."""
    folder = tmp_path_factory.mktemp("pki")
    files = {"ca": folder / "ca.pem", "other_ca": folder / "other-ca.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    trustme.CA().cert_pem.write_to_path(str(files["other_ca"]))
    client = ca.issue_cert("gateway-client.example", common_name="gateway-client")
    files["client_cert"] = folder / "client.pem"
    files["client_key"] = folder / "client.key"
    client.cert_chain_pems[0].write_to_path(str(files["client_cert"]))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    return {name: str(path) for name, path in files.items()}


def server_context(ca: trustme.CA, *, require_client: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost", "internal.example").configure_cert(context)
    if require_client:
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
    return context


@pytest.fixture(scope="module")
def https_upstream(ca: trustme.CA) -> TLSUpstreamServer:
    return start_tls_upstream(server_context(ca), name="https")


@pytest.fixture(scope="module")
def mtls_upstream(ca: trustme.CA) -> TLSUpstreamServer:
    return start_tls_upstream(server_context(ca, require_client=True), name="mtls")


def gateway(upstream: dict[str, Any]) -> Gateway:
    return Gateway.from_dict(
        {
            "consumers": [
                {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}}
            ],
            "routes": [{"id": "r", "uri": "/*", "plugins": {"basic-auth": {}}, "upstream": upstream}],
        }
    )


def serve(kind: str, upstream: dict[str, Any]) -> int:
    built = gateway(upstream)
    if kind == "asgi":
        return ASGIServer(built.asgi_proxy()).port
    return WSGIServer(built.wsgi_proxy()).port


def https(server: TLSUpstreamServer, **fields: Any) -> dict[str, Any]:
    return {"scheme": "https", "nodes": {server.authority: 1}, **fields}


PROXIES = [pytest.param("asgi", id="asgi-proxy"), pytest.param("wsgi", id="wsgi-proxy")]


@pytest.mark.parametrize("kind", PROXIES)
def test_a_private_ca_is_trusted_through_ca_file(
    kind: str, https_upstream: TLSUpstreamServer, pki: dict[str, str]
) -> None:
    port = serve(kind, https(https_upstream, tls={"ca_file": pki["ca"]}))
    for _ in range(2):  # the second request may reuse the kept-alive TLS connection
        reply = request(port, "GET", "/anything", ALEX)
        assert reply.status == 200
        document = json.loads(reply.body)
        assert document["consumer"] == "alex"
        assert document["server"] == "https"
    assert https_upstream.server_names[-1] is None  # an IP address is never sent as SNI (RFC 6066)


@pytest.mark.parametrize("kind", PROXIES)
def test_a_wrong_ca_is_502_logged_once(
    kind: str, https_upstream: TLSUpstreamServer, pki: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    port = serve(kind, https(https_upstream, tls={"ca_file": pki["other_ca"]}))
    with caplog.at_level(logging.WARNING, logger="consumer_auth.proxy"):
        reply = request(port, "GET", "/anything", ALEX)
    assert (reply.status, reply.body) == (502, b'{"error_msg":"502 Bad Gateway"}\n')
    faults = [record.getMessage() for record in caplog.records if record.name == "consumer_auth.proxy"]
    assert len(faults) == 1
    assert "upstream connection failed" in faults[0]
    assert "SSLCertVerificationError" in faults[0]


@pytest.mark.parametrize("kind", PROXIES)
def test_the_system_store_does_not_trust_a_private_ca(kind: str, https_upstream: TLSUpstreamServer) -> None:
    port = serve(kind, https(https_upstream))
    assert request(port, "GET", "/anything", ALEX).status == 502


@pytest.mark.parametrize("kind", PROXIES)
def test_verify_false_connects_and_warns_once_at_load(
    kind: str, https_upstream: TLSUpstreamServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="consumer_auth.proxy"):
        port = serve(kind, https(https_upstream, tls={"verify": False}))
        warnings = [record.getMessage() for record in caplog.records]
        assert request(port, "GET", "/anything", ALEX).status == 200
        assert request(port, "GET", "/anything", ALEX).status == 200
    assert warnings == [
        f"upstream {https_upstream.authority}: tls.verify is false: its certificate is not checked"
    ]
    assert len(caplog.records) == 1


@pytest.mark.parametrize("kind", PROXIES)
def test_mutual_tls_presents_the_client_certificate(
    kind: str, mtls_upstream: TLSUpstreamServer, pki: dict[str, str]
) -> None:
    with_cert = serve(
        kind,
        https(
            mtls_upstream,
            tls={"ca_file": pki["ca"], "client_cert": pki["client_cert"], "client_key": pki["client_key"]},
        ),
    )
    reply = request(with_cert, "GET", "/anything", ALEX)
    assert reply.status == 200
    assert mtls_upstream.client_subjects[-1] == "gateway-client"
    without_cert = serve(kind, https(mtls_upstream, tls={"ca_file": pki["ca"]}))
    assert request(without_cert, "GET", "/anything", ALEX).status == 502


@pytest.mark.parametrize("kind", PROXIES)
def test_sni_is_upstream_host(kind: str, https_upstream: TLSUpstreamServer, pki: dict[str, str]) -> None:
    port = serve(
        kind,
        https(
            https_upstream, pass_host="rewrite", upstream_host="internal.example", tls={"ca_file": pki["ca"]}
        ),
    )
    reply = request(port, "GET", "/anything", ALEX)
    assert reply.status == 200
    assert json.loads(reply.body)["headers"]["host"] == "internal.example"
    assert https_upstream.server_names[-1] == "internal.example"


@pytest.mark.parametrize("kind", PROXIES)
def test_sni_is_the_node_host_name(kind: str, https_upstream: TLSUpstreamServer, pki: dict[str, str]) -> None:
    upstream = {
        "scheme": "https",
        "nodes": {f"localhost:{https_upstream.port}": 1},
        "tls": {"ca_file": pki["ca"]},
    }
    port = serve(kind, upstream)
    assert request(port, "GET", "/anything", ALEX).status == 200
    assert https_upstream.server_names[-1] == "localhost"


def test_a_certificate_for_another_name_is_refused(
    https_upstream: TLSUpstreamServer, pki: dict[str, str]
) -> None:
    port = serve(
        "asgi",
        https(
            https_upstream, pass_host="rewrite", upstream_host="elsewhere.example", tls={"ca_file": pki["ca"]}
        ),
    )
    assert request(port, "GET", "/anything", ALEX).status == 502


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        pytest.param(
            {"verify": "no"}, "routes[0].upstream.tls.verify: expected a boolean, got 'no'", id="verify"
        ),
        pytest.param(
            {"ca_file": "/nonexistent/ca.pem"}, "routes[0].upstream.tls.ca_file: cannot read", id="missing-ca"
        ),
        pytest.param({"ca": "x"}, "routes[0].upstream.tls.ca: unknown key", id="unknown-key"),
        pytest.param(
            {"client_cert": "{client_cert}"},
            "routes[0].upstream.tls.client_key: required with client_cert",
            id="cert-alone",
        ),
        pytest.param(
            {"client_key": "{client_key}"},
            "routes[0].upstream.tls.client_cert: required with client_key",
            id="key-alone",
        ),
        pytest.param({"ca_file": "{client_key}"}, "routes[0].upstream.tls.ca_file: ", id="key-as-ca"),
        pytest.param(
            {"client_cert": "{client_cert}", "client_key": "{other_ca}"},
            "routes[0].upstream.tls.client_cert: the certificate and key cannot be used together",
            id="mismatched-key",
        ),
    ],
)
def test_tls_mistakes_name_their_place(tls: dict[str, Any], message: str, pki: dict[str, str]) -> None:
    tls = {key: value.format(**pki) if isinstance(value, str) else value for key, value in tls.items()}
    with pytest.raises(ConfigError) as raised:
        gateway({"scheme": "https", "nodes": {"127.0.0.1:1": 1}, "tls": tls})
    assert str(raised.value).startswith(message)
    assert "PRIVATE KEY" not in str(raised.value)


def test_tls_files_are_read_at_load(tmp_path: Path, pki: dict[str, str]) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=r"^routes\[0\]\.upstream\.tls\.ca_file: "):
        gateway({"scheme": "https", "nodes": {"127.0.0.1:1": 1}, "tls": {"ca_file": str(bad)}})


@pytest.mark.parametrize("kind", PROXIES)
def test_health_probes_speak_the_upstream_tls(
    kind: str, https_upstream: TLSUpstreamServer, pki: dict[str, str]
) -> None:
    """Probes of an https upstream use its TLS settings: trusted, the node stays in; not, it goes out."""
    checks = {"active": {"interval": 0.05, "timeout": 2, "unhealthy": {"tcp_failures": 1}}}
    trusted = gateway(https(https_upstream, tls={"ca_file": pki["ca"]}, checks=checks))
    untrusted = gateway(https(https_upstream, tls={"ca_file": pki["other_ca"]}, checks=checks))
    probes = https_upstream.count
    ports, proxies, servers = [], [], []
    for built in (trusted, untrusted):
        app: Any = built.asgi_proxy() if kind == "asgi" else built.wsgi_proxy()
        proxies.append((app, built.compiled_routes[0].upstream))
        server = ASGIServer(app) if kind == "asgi" else WSGIServer(app)
        servers.append(server)
        ports.append(server.port)
    try:
        deadline = time.monotonic() + 20
        # The trusted proxy's probes get through TLS and are answered; the untrusted one's fail.
        while not proxies[1][0].health.unhealthy(proxies[1][1]) or https_upstream.count <= probes:
            assert time.monotonic() < deadline, "no probe answered, or the untrusted node never marked"
            time.sleep(0.02)
        assert not proxies[0][0].health.unhealthy(proxies[0][1])
        assert request(ports[0], "GET", "/anything", ALEX).status == 200
        assert request(ports[1], "GET", "/anything", ALEX).status == 502
    finally:
        for server in servers:
            server.stop()  # and with it the probes
