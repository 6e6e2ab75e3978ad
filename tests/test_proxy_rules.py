"""The sans-IO forwarding rules (``consumer_auth.proxy``): targets, headers, balancing, construction."""

from __future__ import annotations

from collections import Counter

import pytest

from consumer_auth import Allow, ConfigError, Gateway, Reject, RequestFacts, Upstream
from consumer_auth.gateway import BAD_REQUEST
from consumer_auth.proxy import (
    BAD_GATEWAY,
    GATEWAY_TIMEOUT,
    Balancer,
    ClientRequest,
    UpstreamRequest,
    forward_target,
    response_headers,
    upstream_request,
)


@pytest.mark.parametrize(
    ("path", "raw", "prefix", "query", "expected"),
    [
        pytest.param("/v1/json", b"/v1/json", "/v1", b"x=1", b"/json?x=1", id="strip-prefix-keep-query"),
        pytest.param("/v1", b"/v1", "/v1", b"", b"/", id="prefix-only-becomes-root"),
        pytest.param("/v1/a/b", b"/v1/a%2Fb", "/v1", b"", b"/a%2Fb", id="raw-encoding-kept"),
        pytest.param("/json", b"/json", "", b"y=%2F&z", b"/json?y=%2F&z", id="query-byte-for-byte"),
        pytest.param("/v1/caf\u00e9", b"/v1/caf%C3%A9", "/v1", b"", b"/caf%C3%A9", id="utf8-escapes-kept"),
        pytest.param("/json", b"/public/../json", "", b"", b"/json", id="dot-segments-send-authorized-path"),
        pytest.param("/json", b"//json", "", b"", b"/json", id="double-slash-sends-authorized-path"),
        pytest.param("/v1/a b", None, "/v1", b"q", b"/a%20b?q", id="no-raw-path-reencoded"),
        pytest.param("/v1/x", b"/%761/x", "/v1", b"", b"/x", id="encoded-prefix-falls-back"),
        pytest.param("/caf\u00e9", b"/caf\xc3\xa9", "", b"", b"/caf%C3%A9", id="non-ascii-raw-escaped"),
    ],
)
def test_forward_target(path: str, raw: bytes | None, prefix: str, query: bytes, expected: bytes) -> None:
    assert forward_target(path, raw, prefix, query) == expected


def _request(
    headers: list[tuple[bytes, bytes]], decision: Allow | None = None, **client: object
) -> dict[bytes, bytes]:
    facts = RequestFacts("GET", "/json", "example.com")
    built = upstream_request(facts, decision or Allow(None), ClientRequest(headers=headers, **client))  # type: ignore[arg-type]
    assert isinstance(built, UpstreamRequest)
    names = [name for name, _ in built.headers]
    assert len(names) == len(set(names)), names
    return dict(built.headers)


def test_hop_by_hop_and_connection_named_headers_are_removed() -> None:
    sent = _request(
        [
            (b"connection", b"keep-alive, X-Private"),
            (b"x-private", b"1"),
            (b"keep-alive", b"timeout=5"),
            (b"proxy-connection", b"keep-alive"),
            (b"te", b"trailers"),
            (b"trailer", b"x-checksum"),
            (b"upgrade", b"websocket"),
            (b"proxy-authorization", b"Basic Zm9vOmJhcg=="),
            (b"x-kept", b"yes"),
        ]
    )
    assert sent[b"x-kept"] == b"yes"
    for name in (
        b"connection",
        b"x-private",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
    ):
        assert name not in sent
    assert b"proxy-authorization" not in sent


def test_forwarded_headers_are_set_from_what_the_gateway_saw() -> None:
    sent = _request(
        [
            (b"host", b"Example.com:8443"),
            (b"x-forwarded-for", b"203.0.113.7"),
            (b"x-forwarded-for", b"198.51.100.1"),
            (b"x-forwarded-proto", b"https"),
            (b"x-forwarded-host", b"evil.test"),
            (b"x-forwarded-port", b"1"),
            (b"x-real-ip", b"10.0.0.1"),
        ],
        peer="192.0.2.10",
        scheme="http",
        server_port=9080,
    )
    assert sent[b"x-forwarded-for"] == b"203.0.113.7, 198.51.100.1, 192.0.2.10"
    assert sent[b"x-forwarded-proto"] == b"http"
    assert sent[b"x-forwarded-host"] == b"example.com"
    assert sent[b"x-forwarded-port"] == b"9080"
    assert sent[b"x-real-ip"] == b"192.0.2.10"
    assert b"host" not in sent  # chosen per node by pass_host


def test_what_is_remembered_between_requests_follows_each_request() -> None:
    """The forwarded host and the encoded identity headers are kept from one request to the next: a
    request with another Host or another consumer gets its own, never the previous one's."""
    alex = Allow(None, identity_headers=(("x-consumer-username", "alex"),))
    kim = Allow(None, identity_headers=(("x-consumer-username", "kim"), ("X-Consumer-Custom-ID", "7")))
    seen = [
        _request([(b"host", host)], decision)
        for host, decision in [
            (b"a.example:1", alex),
            (b"a.example:1", alex),
            (b"B.example", kim),
            (b":9", alex),
            (b"a.example:1", kim),
        ]
    ]
    assert [sent.get(b"x-forwarded-host") for sent in seen] == [
        b"a.example",
        b"a.example",
        b"b.example",
        None,
        b"a.example",
    ]
    assert [sent[b"x-consumer-username"] for sent in seen] == [b"alex", b"alex", b"kim", b"alex", b"kim"]
    assert seen[2][b"X-Consumer-Custom-ID"] == b"7"  # names as the decision spells them
    assert b"X-Consumer-Custom-ID" not in seen[3]


def test_identity_headers_replaced_and_credentials_hidden() -> None:
    decision = Allow(None, identity_headers=(("x-consumer-username", "alex"),), hide_credentials=True)
    sent = _request(
        [
            (b"authorization", b"Basic YWxleDoxMjM0NTY="),
            (b"x-consumer-username", b"admin"),
            (b"x-credential-identifier", b"forged"),
            (b"x-consumer-custom-id", b"forged"),
        ],
        decision,
    )
    assert sent[b"x-consumer-username"] == b"alex"
    assert b"x-credential-identifier" not in sent
    assert b"x-consumer-custom-id" not in sent
    assert b"authorization" not in sent


def test_chunked_body_drops_content_length() -> None:
    facts = RequestFacts("POST", "/json")
    built = upstream_request(
        facts,
        Allow(None),
        ClientRequest(headers=[(b"content-length", b"10"), (b"transfer-encoding", b"chunked")]),
    )
    assert isinstance(built, UpstreamRequest)
    assert built.chunked
    assert built.content_length is None
    assert b"content-length" not in dict(built.headers)
    assert b"transfer-encoding" not in dict(built.headers)


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        pytest.param({"nodes": {"127.0.0.1:9001": 1}}, b"example.com:9080", id="pass"),
        pytest.param({"nodes": {"127.0.0.1:9001": 1}, "pass_host": "node"}, b"127.0.0.1:9001", id="node"),
        pytest.param({"nodes": {"backend:80": 1}, "pass_host": "node"}, b"backend", id="node-default-port"),
        pytest.param(
            {"nodes": {"127.0.0.1:9001": 1}, "pass_host": "rewrite", "upstream_host": "internal.test"},
            b"internal.test",
            id="rewrite",
        ),
    ],
)
def test_host_per_pass_host(upstream: dict[str, object], expected: bytes) -> None:
    parsed = Upstream.parse(upstream)
    built = upstream_request(
        RequestFacts("GET", "/"), Allow(None), ClientRequest(headers=[(b"host", b"example.com:9080")])
    )
    assert isinstance(built, UpstreamRequest)
    assert built.host(parsed, parsed.nodes[0]) == expected


def test_response_headers_drop_hop_by_hop_date_and_server() -> None:
    kept = response_headers(
        [
            (b"Content-Type", b"application/json"),
            (b"Connection", b"keep-alive, X-Hop"),
            (b"X-Hop", b"1"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Date", b"Mon, 13 Jun 2022 07:28:33 GMT"),
            (b"Server", b"upstream/1.0"),
            (b"Set-Cookie", b"a=1"),
            (b"Set-Cookie", b"b=2"),
        ]
    )
    assert kept == [(b"content-type", b"application/json"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]


def test_fault_answers_have_the_json_shape() -> None:
    assert BAD_GATEWAY.status == 502
    assert BAD_GATEWAY.body == b'{"error_msg":"502 Bad Gateway"}\n'
    assert GATEWAY_TIMEOUT.status == 504
    assert GATEWAY_TIMEOUT.body == b'{"error_msg":"504 Gateway Timeout"}\n'
    assert dict(GATEWAY_TIMEOUT.headers)["Content-Type"] == "text/plain; charset=utf-8"


def test_balancer_follows_weights_and_lists_the_others_for_retry() -> None:
    upstream = Upstream.parse({"nodes": {"a:1": 3, "b:1": 1, "c:1": 0}})
    balancer = Balancer(upstream)
    orders = [balancer.order() for _ in range(40)]
    assert Counter(order[0].host for order in orders) == {"a": 30, "b": 10}
    assert all({node.host for node in order} == {"a", "b"} for order in orders)  # weight 0: never used
    assert [order[0].host for order in orders[:4]] == ["a", "a", "b", "a"]  # spread, not a, a, a, b


def test_proxy_needs_an_upstream_for_every_route() -> None:
    gateway = Gateway.from_dict(
        {"routes": [{"uri": "/a", "upstream": "http://127.0.0.1:1"}, {"id": "b", "uri": "/b"}]}
    )
    with pytest.raises(ConfigError, match=r"^routes\[1\]\.upstream: route 'b' has no upstream"):
        gateway.wsgi_proxy()
    with pytest.raises(ConfigError, match=r"^routes\[1\]\.upstream"):
        gateway.asgi_proxy()
    gateway.wsgi_proxy(upstream="http://127.0.0.1:2")  # a default upstream serves it


def test_unmatched_pass_needs_a_default_upstream() -> None:
    gateway = Gateway.from_dict(
        {"unmatched": "pass", "routes": [{"uri": "/a", "upstream": "http://127.0.0.1:1"}]}
    )
    with pytest.raises(ConfigError, match=r"^unmatched: 'pass' needs a default upstream"):
        gateway.asgi_proxy()
    gateway.asgi_proxy(upstream="http://127.0.0.1:2")


def test_invalid_default_upstream_names_its_place() -> None:
    gateway = Gateway.from_dict({"routes": [{"uri": "/a"}]})
    with pytest.raises(ConfigError, match=r"^upstream: expected an http or https URL"):
        gateway.wsgi_proxy(upstream="ftp://127.0.0.1:1")
    with pytest.raises(ConfigError, match=r"^upstream\.timeout\.read: expected a positive number"):
        gateway.wsgi_proxy(upstream={"nodes": {"127.0.0.1:1": 1}, "timeout": {"read": 0}})


@pytest.mark.parametrize(
    "connection",
    [
        b"Content-Length",
        b"close, content-length",
        b"TRANSFER-ENCODING",
        b"host",
        b"keep-alive, Content_Length",
    ],
)
def test_connection_naming_a_framing_header_is_a_400(connection: bytes) -> None:
    built = upstream_request(
        RequestFacts("POST", "/json"),
        Allow(None),
        ClientRequest(headers=[(b"connection", connection), (b"content-length", b"5")]),
    )
    assert built == BAD_REQUEST
    assert isinstance(built, Reject)
    assert built.body == b'{"error_msg":"400 Bad Request"}\n'


def test_content_length_is_written_from_the_body_not_copied() -> None:
    built = upstream_request(
        RequestFacts("POST", "/json"), Allow(None), ClientRequest(headers=[(b"content-length", b"5")])
    )
    assert isinstance(built, UpstreamRequest)
    assert b"content-length" not in dict(built.headers)
    assert built.framing(chunked=False) == (b"content-length", b"5")
    assert built.framing(chunked=True) == (b"transfer-encoding", b"chunked")


def test_underscore_spellings_of_removed_headers_are_removed() -> None:
    decision = Allow(None, identity_headers=(("x-consumer-username", "alex"),))
    sent = _request(
        [
            (b"x_consumer_username", b"admin"),
            (b"x-consumer_username", b"admin"),
            (b"x_credential_identifier", b"forged"),
            (b"x_consumer_custom_id", b"forged"),
            (b"x_forwarded_for", b"10.0.0.1"),
            (b"x_real_ip", b"10.0.0.1"),
            (b"x_forwarded_host", b"evil.test"),
            (b"content_length", b"99"),
            (b"transfer_encoding", b"chunked"),
            (b"x_kept_header", b"kept"),
        ],
        decision,
        peer="127.0.0.1",
    )
    assert sent == {
        b"x_kept_header": b"kept",
        b"x-consumer-username": b"alex",
        b"x-forwarded-for": b"127.0.0.1",
        b"x-forwarded-proto": b"http",
        b"x-forwarded-port": b"80",
        b"x-real-ip": b"127.0.0.1",
    }
