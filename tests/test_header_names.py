"""Header names as the servers behind the gateway read them (SPEC §8), over real servers.

A client may spell an identity header (``X-Consumer-Username``...) or a forwarding header
(``X-Forwarded-For``, ``X-Real-IP``...) in any case, with ``_`` for ``-``, or several times. CGI-style
servers (``wsgiref``, granian's WSGI) read ``X_Consumer_Username`` as ``HTTP_X_CONSUMER_USERNAME``, so such
a copy must never reach an app or upstream. Also here: two ``Host`` headers in-process (the proxies are in
``test_framing.py``).
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import proxy_servers
from consumer_auth import Gateway
from consumer_auth.sansio.decision import header_key
from proxy_servers import CONSUMER_AUTH, Process, RawUpstream
from support import basic, echo_asgi, echo_wsgi

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

ALEX = basic("alex", "123456")
BAD_REQUEST = b'{"error_msg":"400 Bad Request"}\n'
IDENTITY = ("X-Consumer-Username", "X-Credential-Identifier", "X-Consumer-Custom-ID")
FORWARDING = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port", "X-Real-IP")
WATCHED = frozenset(name.lower() for name in (*IDENTITY, *FORWARDING))


def settings_for(upstream: str | None = None) -> dict[str, Any]:
    """alex (with a custom id) on a guarded ``/v1/*``; ``/public/*`` open."""
    where = {"upstream": upstream} if upstream else {}
    return {
        "consumers": [
            {
                "username": "alex",
                "labels": {"custom_id": "alex-custom"},
                "plugins": {"basic-auth": {"username": "alex", "password": "123456"}},
            }
        ],
        "routes": [
            {"id": "public", "uri": "/public/*", **where},
            {"id": "guarded", "uri": "/v1/*", "plugins": {"basic-auth": {}}, **where},
        ],
    }


def raw_request(port: int, target: str, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
    """One request with the header names exactly as given (``http.client`` would not change them, but
    this keeps every byte in view); its status and body."""
    head = f"GET {target} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode("latin-1") + b"Connection: close\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()


class KeptAlive:
    """Requests with header names exactly as given, on one kept-alive connection while the server
    keeps it (a new one after the server closes it)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None

    def request(self, target: str, headers: list[tuple[str, str]]) -> tuple[int, bytes]:
        head = f"GET {target} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers)
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.sock.sendall(head.encode("latin-1") + b"\r\n")
        response = http.client.HTTPResponse(self.sock)
        response.begin()
        body = response.read()
        if response.will_close:
            self.close()
        return response.status, body

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


# -- the readings of the servers behind us ----------------------------------------------------------


def cgi_key(name: str) -> str:
    """The CGI variable a header name becomes (wsgiref, granian, gunicorn's ``header_map: dangerous``)."""
    return "HTTP_" + name.upper().replace("-", "_")


def wsgiref_reading(headers: list[tuple[str, str]]) -> dict[str, str]:
    """``wsgiref.simple_server``'s environ: CGI keys, repeats joined by ``,`` (its ``get_environ``)."""
    environ: dict[str, str] = {}
    for name, value in headers:
        key = cgi_key(name)
        environ[key] = f"{environ[key]},{value.strip()}" if key in environ else value.strip()
    return environ


def granian_reading(headers: list[tuple[str, str]]) -> dict[str, str]:
    """granian's WSGI environ as modelled here: CGI keys, and for a repeated key the last value, the
    reading that favours a client appending its own copy after the gateway's."""
    return {cgi_key(name): value for name, value in headers}


def raw_reading(headers: list[tuple[str, str]]) -> dict[str, list[str]]:
    """What a raw-socket reader sees, per name as :func:`header_key` reads it."""
    seen: dict[str, list[str]] = {}
    for name, value in headers:
        seen.setdefault(header_key(name.encode("latin-1")).decode("latin-1"), []).append(value)
    return seen


# -- item 2: underscore identity headers, through real servers ----------------------------------------


def environ_echo(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """A wsgiref upstream app: the CGI variables it was given."""
    body = json.dumps({k: v for k, v in environ.items() if k.startswith("HTTP_")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture(scope="module")
def wsgiref_upstream() -> proxy_servers.WSGIRefServer:
    return proxy_servers.WSGIRefServer(environ_echo)


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str, dict[str, Any]], int]]:
    """Start a front (``serve``, ``asgi-proxy``, ``wsgi-proxy``, ``wsgi-proxy-wsgiref``, or in-process
    ``asgi-uvicorn``, ``wsgi-werkzeug``, ``wsgi-wsgiref``) for a configuration; its port."""
    processes: list[Process] = []

    def run(kind: str, config: dict[str, Any]) -> int:
        if kind == "serve":
            path = tmp_path_factory.mktemp("serve") / "gateway.yaml"
            path.write_text(yaml.safe_dump(config))
            process = Process(
                [CONSUMER_AUTH, "serve", "--config", str(path), "--port", "0", "--no-access-log"]
            )
            processes.append(process)
            return process.uvicorn_port()
        gateway = Gateway.from_dict(config)
        servers: dict[str, Callable[[], int]] = {
            "asgi-proxy": lambda: proxy_servers.ASGIServer(gateway.asgi_proxy()).port,
            "wsgi-proxy": lambda: proxy_servers.WSGIServer(gateway.wsgi_proxy()).port,
            "wsgi-proxy-wsgiref": lambda: proxy_servers.WSGIRefServer(gateway.wsgi_proxy()).port,
            "asgi-uvicorn": lambda: proxy_servers.ASGIServer(gateway.asgi(echo_asgi)).port,
            "wsgi-werkzeug": lambda: proxy_servers.WSGIServer(gateway.wsgi(echo_wsgi)).port,
            "wsgi-wsgiref": lambda: proxy_servers.WSGIRefServer(gateway.wsgi(echo_wsgi)).port,
        }
        return servers[kind]()

    yield run
    for process in processes:
        assert process.terminate() == 0


PROXIES = ["serve", "asgi-proxy", "wsgi-proxy", "wsgi-proxy-wsgiref"]
IN_PROCESS = ["asgi-uvicorn", "wsgi-werkzeug", "wsgi-wsgiref"]
FORGED = [
    ("X_Consumer_Username", "alice"),
    ("x_consumer_custom_id", "alice-custom"),
    ("X_CREDENTIAL_IDENTIFIER", "alice-cred"),
    ("X-Consumer_Username", "mallory"),
    ("X_Forwarded_For", "10.9.9.9"),
    ("x_real_ip", "10.9.9.9"),
    ("X_Forwarded_Host", "evil.test"),
    ("X_forwarded_proto", "https"),
    ("X_FORWARDED_PORT", "1"),
]


@pytest.mark.parametrize("kind", PROXIES)
def test_underscore_copies_never_reach_a_cgi_style_upstream(
    start: Callable[[str, dict[str, Any]], int], wsgiref_upstream: proxy_servers.WSGIRefServer, kind: str
) -> None:
    port = start(kind, settings_for(wsgiref_upstream.url))
    host = ("Host", "example.com")
    status, body = raw_request(port, "/public/x", [host, *FORGED])
    assert status == 200, body
    environ = json.loads(body)
    for name in IDENTITY:
        assert cgi_key(name) not in environ, name
    # wsgiref in front of the WSGI proxy has already read X_Forwarded_For as X-Forwarded-For: the proxy
    # then keeps it as it keeps any client's X-Forwarded-For, before the peer it appends.
    merged = "10.9.9.9, " if kind == "wsgi-proxy-wsgiref" else ""
    assert environ["HTTP_X_FORWARDED_FOR"] == merged + "127.0.0.1"
    assert environ["HTTP_X_REAL_IP"] == "127.0.0.1"
    assert environ["HTTP_X_FORWARDED_HOST"] == "example.com"
    assert environ["HTTP_X_FORWARDED_PROTO"] == "http"
    assert environ["HTTP_X_FORWARDED_PORT"] == str(port)

    status, body = raw_request(port, "/v1/x", [host, ("Authorization", ALEX), *FORGED])
    assert status == 200, body
    environ = json.loads(body)
    assert environ["HTTP_X_CONSUMER_USERNAME"] == "alex"  # not "alice,alex"
    assert "HTTP_X_CREDENTIAL_IDENTIFIER" not in environ  # the credential has no id
    assert environ["HTTP_X_CONSUMER_CUSTOM_ID"] == "alex-custom"


@pytest.mark.parametrize("kind", IN_PROCESS)
def test_underscore_copies_never_reach_an_app_in_process(
    start: Callable[[str, dict[str, Any]], int], kind: str
) -> None:
    port = start(kind, settings_for())
    host = ("Host", "example.com")
    for target, auth, consumer in (("/public/x", [], None), ("/v1/x", [("Authorization", ALEX)], "alex")):
        status, body = raw_request(port, target, [host, *auth, *FORGED[:4]])
        assert status == 200, body
        seen = json.loads(body)
        identity = {k: v for k, v in seen["headers"].items() if header_key(k.encode()).decode() in WATCHED}
        expected = (
            {}
            if consumer is None
            else {
                "x-consumer-username": "alex",
                "x-consumer-custom-id": "alex-custom",
            }
        )
        assert {header_key(k.encode()).decode(): v for k, v in identity.items()} == expected
        assert len(identity) == len(expected)  # one spelling each: the gateway's
        assert seen["consumer"] == consumer


# -- item 5: two Host headers in-process ----------------------------------------------------------------


def tenants() -> dict[str, Any]:
    return {
        "consumers": [
            {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}}
        ],
        "routes": [
            {"id": "pub", "uri": "/tenant", "hosts": ["public.example.com"]},
            {"id": "sec", "uri": "/tenant", "hosts": ["secure.example.com"], "plugins": {"basic-auth": {}}},
        ],
    }


@pytest.mark.parametrize("kind", IN_PROCESS)
def test_two_host_headers_are_refused_in_process(
    start: Callable[[str, dict[str, Any]], int], kind: str
) -> None:
    port = start(kind, tenants())
    for hosts in (
        [("Host", "secure.example.com"), ("Host", "public.example.com")],
        [("Host", "public.example.com"), ("Host", "secure.example.com")],
        [("Host", "secure.example.com"), ("host", "secure.example.com")],
        [("Host", "public.example.com, secure.example.com")],
    ):
        assert raw_request(port, "/tenant", hosts) == (400, BAD_REQUEST), hosts
    assert raw_request(port, "/tenant", [("Host", "public.example.com")])[0] == 200
    assert raw_request(port, "/tenant", [("Host", "secure.example.com")])[0] == 401


# -- "What to build" 4: the header differential -------------------------------------------------------


@st.composite
def spelling(draw: st.DrawFn, name: str) -> str:
    """``name`` in any casing, each ``-`` kept or written ``_``."""
    letters = []
    for char in name:
        if char == "-":
            letters.append(draw(st.sampled_from("-_")))
        else:
            letters.append(char.upper() if draw(st.booleans()) else char.lower())
    return "".join(letters)


FORGEABLE = (*IDENTITY, *FORWARDING)
client_headers = st.lists(
    st.sampled_from(FORGEABLE).flatmap(spelling), min_size=1, max_size=6
)  # duplicates, both spellings together, any order


def _expected(port: int, consumer: bool) -> dict[str, list[str]]:
    """The watched headers the upstream must see, and nothing else of them, for the test's requests."""
    expected = {
        "x-forwarded-proto": ["http"],
        "x-forwarded-host": ["example.com"],
        "x-forwarded-port": [str(port)],
        "x-real-ip": ["127.0.0.1"],
    }
    if consumer:
        expected.update(
            {
                "x-consumer-username": ["alex"],
                "x-consumer-custom-id": ["alex-custom"],
            }
        )
    return expected


@pytest.fixture(scope="module")
def raw_upstream() -> RawUpstream:
    return RawUpstream()


DIFFERENTIAL_EXAMPLES = 700
"""Per proxy front: 2,800 derandomized examples in all, a few seconds each front."""


def differential(port: int, kind: str, raw_upstream: RawUpstream, examples: int) -> None:
    """Send ``examples`` generated requests through the front on ``port``; fail on the first whose
    upstream request holds a client-chosen identity or forwarding header in any reading."""
    expected = {True: _expected(port, True), False: _expected(port, False)}
    client = KeptAlive(port)

    @settings(
        max_examples=examples,
        report_multiple_bugs=False,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(names=client_headers, authenticated=st.booleans())
    def check(names: list[str], authenticated: bool) -> None:
        marker = [(name, f"client{index}") for index, name in enumerate(names)]
        auth = [("Authorization", ALEX)] if authenticated else []
        before = len(raw_upstream.requests)
        target = "/v1/x" if authenticated else "/public/x"
        status, body = client.request(target, [("Host", "example.com"), *auth, *marker])
        assert status == 200, body
        (seen,) = raw_upstream.requests[before:]
        headers: list[tuple[str, str]] = seen["headers"]
        watched = [(n, v) for n, v in headers if header_key(n.encode("latin-1")).decode() in WATCHED]
        # The raw socket: exactly the gateway's headers, each once, in the canonical spelling.
        raw = raw_reading(watched)
        forwarded_for = raw.pop("x-forwarded-for")
        assert raw == expected[authenticated], (names, watched)
        assert all(n == n.lower() and "_" not in n for n, _ in watched), watched
        # X-Forwarded-For: the client's own X-Forwarded-For values (kept, as nginx does), then the peer;
        # never a value sent under another spelling.
        # In front of the WSGI proxy, the WSGI server has already joined repeats with ",": wsgiref
        # also took the "_" spellings as the same header, werkzeug dropped them.
        if kind.startswith("wsgi-proxy"):
            merge = header_key if kind == "wsgi-proxy-wsgiref" else bytes.lower
            spelled = [value for name, value in marker if merge(name.encode()) == b"x-forwarded-for"]
            own = [",".join(spelled)] if spelled else []
        else:
            own = [value for name, value in marker if name.lower() == "x-forwarded-for"]
        assert forwarded_for == [", ".join([*own, "127.0.0.1"])], (names, forwarded_for)
        # CGI-style readings: the same values, so no client copy was merged or put last.
        for reading in (wsgiref_reading(headers), granian_reading(headers)):
            for name, values in expected[authenticated].items():
                assert reading[cgi_key(name)] == values[0], (reading, names)
            for name in IDENTITY:
                if not authenticated:
                    assert cgi_key(name) not in reading, (reading, names)

    try:
        check()
    finally:
        client.close()


@pytest.mark.parametrize("kind", PROXIES)
def test_header_differential(
    start: Callable[[str, dict[str, Any]], int], raw_upstream: RawUpstream, kind: str
) -> None:
    """Whatever identity or forwarding headers a client sends, in whatever spelling, the upstream holds
    only the gateway's — read raw, by wsgiref's rules and by granian's."""
    differential(start(kind, settings_for(raw_upstream.url)), kind, raw_upstream, DIFFERENTIAL_EXAMPLES)


def test_the_differential_catches_a_proxy_without_the_name_rule(
    start: Callable[[str, dict[str, Any]], int], raw_upstream: RawUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``_`` no longer read as ``-`` (exact lower-case names only, as before SPEC §8), the
    differential finds a forged header within its examples."""
    import consumer_auth.proxy._plan as plan

    exact = plan.HOP_BY_HOP | plan._REPLACED
    monkeypatch.setattr(plan, "_REQUEST_DROP", exact)
    monkeypatch.setattr(plan, "_REQUEST_DROP_CREDENTIALS", exact | {b"authorization"})
    port = start("asgi-proxy", settings_for(raw_upstream.url))
    with pytest.raises(AssertionError):
        differential(port, "asgi-proxy", raw_upstream, 200)


@settings(max_examples=2000, derandomize=True, database=None, deadline=None)
@given(
    name=st.sampled_from([*WATCHED, "content-length", "proxy-authorization", "x-other-header"]).flatmap(
        spelling
    ),
    junk=st.text(alphabet="-_abcxyz", max_size=4),
)
def test_spellings_are_exactly_what_header_key_reads_alike(name: str, junk: str) -> None:
    """The precomputed sets the adapters use hold a lower-case name exactly when the rule says so."""
    from consumer_auth.sansio.decision import IDENTITY_KEYS, IDENTITY_SPELLINGS, spellings

    for candidate in (name.lower(), (name + junk).lower(), (junk + name).lower()):
        encoded = candidate.encode()
        assert (encoded in IDENTITY_SPELLINGS) == (header_key(encoded) in IDENTITY_KEYS)
        watched = frozenset(n.encode() for n in WATCHED)
        assert (encoded in spellings(watched)) == (header_key(encoded) in watched)
