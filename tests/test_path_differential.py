"""Differential tests: the gateway against the routers users run, on generated hostile requests.

For each generated request (segments with ``;``, ``%xx``, dots, ``\\``, NUL, case changes, no leading
``/``, a trailing ``/``, ``//``, fragments, other hosts and methods) the request goes through the gateway
and, if the gateway lets it through without credentials, the real router decides which view it reaches:

- werkzeug's ``Map`` in a Flask app, Django's URL resolver (``CommonMiddleware`` with ``APPEND_SLASH``)
  and Starlette's router, each behind the gateway in-process, exactly as users wrap them; redirects
  (``APPEND_SLASH``, strict slashes) are followed through the gateway again, as a client would;
- a servlet container's reading of what the forwarding proxy sends upstream (Servlet spec: ``;params``
  removed from each segment, then ``..`` resolved, so ``..;`` is ``..``) and an IIS-style reading
  (decoded twice, ``\\`` as ``/``, trailing dots and spaces dropped, case-insensitive).

A request that reaches a guarded view without credentials fails the test. Each router runs under both
``unmatched`` settings in every example (IIS with ``path_matching.case_insensitive`` under ``pass``, the
option made for it). ``test_a_broken_rule_is_caught`` disables one rule at a time and shows that the
differential then fails.
"""

from __future__ import annotations

import asyncio
import copy
import io
import sys
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlsplit

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from consumer_auth import Gateway
from consumer_auth.asgi import facts_from_scope
from consumer_auth.proxy._plan import ClientRequest, UpstreamRequest, upstream_request
from consumer_auth.sansio.decision import Allow
from support import call_asgi

EXAMPLES = 1500
"""Examples per router (each checked under both ``unmatched`` settings)."""

GUARDED_VIEWS = frozenset({"admin", "json"})

# The gateway: a public prefix beside guarded paths, one guarded route on one host and GET only.
DIFF: dict[str, Any] = {
    "consumers": [
        {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}}
    ],
    "routes": [
        {"id": "pub", "uri": "/v1/pub/*"},
        {"id": "admin", "uris": ["/v1/admin", "/v1/admin/*"], "plugins": {"basic-auth": {}}},
        {
            "id": "json",
            "uri": "/v1/json",
            "methods": ["GET"],
            "hosts": ["example.com"],
            "plugins": {"basic-auth": {}},
        },
    ],
}


def config(unmatched: str, **extra: Any) -> dict[str, Any]:
    document = copy.deepcopy(DIFF)
    document["unmatched"] = unmatched
    document.update(extra)
    return document


# -- the requests -------------------------------------------------------------------------------------------

_DOTS = [".", "..", "%2e", "%2e%2e", ".%2e", "..;", ".;", "..;x", "..%3b", "..\\", "..%5c", "%252e%252e",
         "%252e", "..%00", ".. ", "..%20", ""]  # fmt: skip
_DECOR = ["", "", "", "", "", ";", ";x=1", ".", "%2e", "%20", "..", "%00", "%0a", "%0d", "%09", "%7f", "\\",
          "%5c", "%3b", "%2f", "%252f", "%255c", "/", "#f", "%23"]  # fmt: skip
_SEPARATORS = ["/", "/", "/", "/", "/", "/", "\\", "%5c", "//", "%2f", "/./", "/../"]
_SKELETONS = [
    ("v1", "admin"),
    ("v1", "admin", "x"),
    ("v1", "json"),
    ("v1", "pub", "x"),
    ("v1", "about"),
    ("v1", "pub", "*", "admin", "x"),
    ("v1", "pub", "*", "admin"),
    ("v1", "pub", "x", "*", "*", "admin", "x"),
    ("v1", "pub", "*", "json"),
    ("v1", "*", "admin"),
    ("*", "v1", "admin", "x"),
    ("v1", "pub", "*", "*", "v1", "admin"),
]


_TAILS = ["/", "?q=1", "#frag", "#/x", "%0a", ";", ";x", "/.", "%2e", "%20", ".", "%00"]
_MUTATIONS: list[tuple[str, str]] = [
    *(("case", how) for how in ("upper", "title", "first")),
    *(("decor", decor) for decor in _DECOR if decor),
    *(("sep", separator) for separator in _SEPARATORS if separator != "/"),
    *(("lead", lead) for lead in ("", "//")),
    *(("tail", tail) for tail in _TAILS),
]
"""What a hostile client changes in a plain target: each applies at one segment (or at the ends)."""


def _case(word: str, how: str) -> str:
    if how == "upper":
        return word.upper()
    if how == "title":
        return word.title()
    return word[:1].upper() + word[1:]


@st.composite
def targets(draw: st.DrawFn) -> str:
    """A request target as a client could put it on the request line: a plain path to one of the
    views, with dot segments of every spelling where the skeleton has ``*``, and up to three changes."""
    skeleton = draw(st.sampled_from(_SKELETONS))
    words = [draw(st.sampled_from(_DOTS)) if word == "*" else word for word in skeleton]
    separators = ["/"] * len(words)
    lead, tail = "/", ""
    changes = st.tuples(st.integers(0, len(words) - 1), st.sampled_from(_MUTATIONS))
    for at, (kind, value) in draw(st.lists(changes, max_size=3)):
        if kind == "case":
            words[at] = _case(words[at], value)
        elif kind == "decor":
            words[at] += value
        elif kind == "sep" and at:
            separators[at] = value
        elif kind == "lead":
            lead = value
        elif kind == "tail":
            tail = value
    path = words[0] + "".join(sep + word for sep, word in zip(separators[1:], words[1:], strict=True))
    return lead + path + tail


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, str | None]:
    method = draw(st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "PUT", "get", "Get"]))
    host = draw(st.sampled_from(["example.com", "example.com", "other.com", "EXAMPLE.com:8080", None]))
    return method, draw(targets()), host


# -- servers: how a raw target becomes PATH_INFO / an ASGI scope ---------------------------------------------


def _split(raw: str, keep_fragment: bool) -> tuple[str, str]:
    """Path and query of a target, as a server splits them (werkzeug/gunicorn cut the fragment; h11,
    hypercorn and daphne leave it in the path)."""
    if not keep_fragment:
        raw = raw.partition("#")[0]
    path, _, query = raw.partition("?")
    return path, query


def _environ(method: str, raw: str, host: str | None, keep_fragment: bool) -> dict[str, Any]:
    path, query = _split(raw, keep_fragment)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query,
        "RAW_URI": raw,
        "REQUEST_URI": raw,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if host is not None:
        environ["HTTP_HOST"] = host
    return environ


Answer = tuple[int, dict[str, str]]
"""Status and headers (names in lower case) of an answer; the views name themselves in ``x-view`` and
the consumer they saw in ``x-seen-consumer`` (also on ``HEAD``)."""


def call_wsgi(app: Any, method: str, raw: str, host: str | None, keep_fragment: bool) -> Answer:
    """Status and headers of one request to a WSGI app."""
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [int(status.split()[0]), {n.lower(): v for n, v in headers}]
        return lambda data: None

    result = app(_environ(method, raw, host, keep_fragment), start_response)
    try:
        b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return started[0], started[1]


def _location(location: str) -> str:
    parts = urlsplit(location)
    return parts.path + ("?" + parts.query if parts.query else "")


def follow(send: Callable[[str, str], Answer], method: str, raw: str) -> Answer:
    """Send a request, following redirects the way a client does (at most 3)."""
    for _ in range(4):
        status, headers = send(method, raw)
        location = headers.get("location")
        if status not in (301, 302, 303, 307, 308) or not location:
            break
        method = method if status in (307, 308) else "GET"
        raw = _location(location)
    return status, headers


def leak(answer: Answer) -> str | None:
    """The guarded view a request reached without credentials, if it did."""
    status, headers = answer
    view = headers.get("x-view")
    if status != 200 or view not in GUARDED_VIEWS:
        return None
    assert headers.get("x-seen-consumer") == "-", headers  # no credentials were sent
    return view


# -- the routers ---------------------------------------------------------------------------------------------

_ALL = ["GET", "HEAD", "POST", "PUT", "DELETE"]


def flask_router(document: dict[str, Any]) -> Any:
    from flask import Flask

    from consumer_auth.contrib.flask import ConsumerAuth, get_consumer

    app = Flask(f"differential_{document['unmatched']}")
    app.config["CONSUMER_AUTH"] = document
    ConsumerAuth(app)

    def answer(view: str) -> Any:
        consumer = get_consumer()
        return "", 200, {"X-View": view, "X-Seen-Consumer": consumer.username if consumer else "-"}

    app.add_url_rule("/v1/admin", "admin", lambda: answer("admin"), methods=_ALL)
    app.add_url_rule("/v1/admin/<path:rest>", "admin_rest", lambda rest: answer("admin"), methods=_ALL)
    app.add_url_rule("/v1/json", "json", lambda: answer("json"), methods=_ALL)
    app.add_url_rule("/v1/pub/<path:rest>", "pub", lambda rest: answer("pub"), methods=_ALL)
    app.add_url_rule("/v1/about", "about", lambda: answer("about"), methods=_ALL)
    return app


def starlette_router(document: dict[str, Any]) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from consumer_auth.contrib.starlette import get_consumer, install

    def view(name: str) -> Any:
        async def endpoint(request: Request) -> Response:
            consumer = get_consumer(request)
            seen = consumer.username if consumer else "-"
            return Response(headers={"x-view": name, "x-seen-consumer": seen})

        return endpoint

    app = Starlette(
        routes=[
            Route("/v1/admin", view("admin"), methods=_ALL),
            Route("/v1/admin/{rest:path}", view("admin"), methods=_ALL),
            Route("/v1/json", view("json"), methods=_ALL),
            Route("/v1/pub/{rest:path}", view("pub"), methods=_ALL),
            Route("/v1/about", view("about"), methods=_ALL),
        ]
    )
    install(app, document)
    return app


_TABLE = [("/v1/admin", "admin"), ("/v1/json", "json"), ("/v1/about", "about")]
_PREFIXES = [("/v1/admin/", "admin"), ("/v1/pub/", "pub")]


def _normalize(path: str) -> str:
    """Resolve dot segments and empty segments (RFC 3986 §5.2.4, as servlet containers and IIS do)."""
    out: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    trailing = "/" if path.endswith(("/", "/.", "/..")) and out else ""
    return "/" + "/".join(out) + trailing


def _view(path: str, fold: bool) -> str | None:
    key = path.lower() if fold else path
    for exact, view in _TABLE:
        if key == (exact.lower() if fold else exact):
            return view
    for prefix, view in _PREFIXES:
        if key.startswith(prefix.lower() if fold else prefix) and len(key) > len(prefix):
            return view
    return None


def servlet_view(target: bytes) -> str | None:
    """The view a servlet container routes a forwarded target to (Servlet spec §3.5, Tomcat, Jetty,
    Spring): path parameters are removed from every segment, then the segment is decoded (Spring also
    removes a ``;`` decoded from ``%3b``), then ``.``/``..`` are resolved."""
    path = target.decode("latin-1").partition("?")[0].partition("#")[0]
    segments = [unquote(segment.partition(";")[0]).partition(";")[0] for segment in path.split("/")]
    return _view(_normalize("/".join(segments)), fold=False)


def iis_view(target: bytes) -> str | None:
    """The view an IIS-style server routes a forwarded target to: decoded twice, ``\\`` as ``/``, a
    segment's trailing dots and spaces dropped, a NUL ends the path, compared case-insensitively."""
    path = unquote(unquote(target.decode("latin-1").partition("?")[0].partition("#")[0]))
    path = path.partition("\x00")[0].replace("\\", "/")
    segments = [s if s in (".", "..") else s.rstrip(". ") for s in path.split("/")]
    return _view(_normalize("/".join(segments)), fold=True)


def forwarded(gateway: Gateway, method: str, raw: str, host: str | None) -> bytes | None:
    """The target the ASGI proxy sends upstream for a request without credentials (``None``: refused)."""
    path, query = _split(raw, keep_fragment=True)  # what h11, hypercorn and daphne hand the proxy
    headers = [(b"host", host.encode())] if host is not None else []
    scope: Any = {
        "type": "http",
        "method": method,
        "path": unquote(path),
        "raw_path": path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 9080),
    }
    facts = facts_from_scope(scope)
    decision = gateway.decide_now(facts)
    if not isinstance(decision, Allow):
        return None
    assert decision.consumer is None  # no credentials were sent
    client = ClientRequest(headers=headers, raw_path=scope["raw_path"], query=scope["query_string"])
    built = upstream_request(facts, decision, client)
    assert isinstance(built, UpstreamRequest)  # the headers here name no framing header in Connection
    return built.target


# -- the properties ------------------------------------------------------------------------------------------

RUNS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# A broken rule only has to be found, not explained: no shrinking.
BROKEN_RUNS = settings(RUNS, phases=[Phase.generate], print_blob=False)


def check_flask(runs: settings = RUNS) -> Callable[[], None]:
    apps = [flask_router(config("reject")), flask_router(config("pass"))]

    @runs
    @given(requests(), st.booleans())
    def run(request: tuple[str, str, str | None], keep_fragment: bool) -> None:
        method, raw, host = request
        for app in apps:

            def send(method: str, raw: str, app: Any = app) -> Answer:
                return call_wsgi(app, method, raw, host, keep_fragment)

            answer = follow(send, method, raw)
            assert leak(answer) is None, (app.name, method, raw, host, answer)

    return run


def check_django(runs: settings = RUNS) -> Callable[[], None]:
    from django.core.handlers.wsgi import WSGIHandler

    from consumer_auth.contrib.django.conf import conf

    gateways = [Gateway.from_dict(config("reject")), Gateway.from_dict(config("pass"))]
    handler = WSGIHandler()

    @runs
    @given(requests(), st.booleans())
    def run(request: tuple[str, str, str | None], keep_fragment: bool) -> None:
        method, raw, host = request
        for gateway in gateways:
            conf._gateway = gateway

            def send(method: str, raw: str) -> Answer:
                return call_wsgi(handler, method, raw, host, keep_fragment)

            answer = follow(send, method, raw)
            assert leak(answer) is None, (gateway.unmatched, method, raw, host, answer)

    return run


def check_starlette(runs: settings = RUNS) -> Callable[[], None]:
    apps = [starlette_router(config("reject")), starlette_router(config("pass"))]
    loop = asyncio.new_event_loop()

    @runs
    @given(requests())
    def run(request: tuple[str, str, str | None]) -> None:
        method, raw, host = request
        headers = [("Host", host)] if host is not None else []
        for app in apps:

            def send(method: str, raw: str, app: Any = app) -> Answer:
                reply = loop.run_until_complete(call_asgi(app, method, raw, headers))
                return reply.status, reply.headers

            answer = follow(send, method, raw)
            assert leak(answer) is None, (method, raw, host, answer)

    def checked() -> None:
        try:
            run()
        finally:
            loop.close()

    return checked


def check_upstream(
    runs: settings, read: Callable[[bytes], str | None], *documents: dict[str, Any]
) -> Callable[[], None]:
    gateways = [Gateway.from_dict(document) for document in documents]

    @runs
    @given(requests())
    def run(request: tuple[str, str, str | None]) -> None:
        method, raw, host = request
        for gateway in gateways:
            target = forwarded(gateway, method, raw, host)
            if target is not None:
                view = read(target)
                assert view not in GUARDED_VIEWS, (gateway.unmatched, method, raw, host, target, view)

    return run


def check_servlet(runs: settings = RUNS) -> Callable[[], None]:
    return check_upstream(runs, servlet_view, config("reject"), config("pass"))


def check_iis(runs: settings = RUNS) -> Callable[[], None]:
    folded = config("pass", path_matching={"case_insensitive": True})
    return check_upstream(runs, iis_view, config("reject"), folded)


@pytest.fixture
def django_settings() -> Iterator[None]:
    from django.test import override_settings

    from consumer_auth.contrib.django.conf import conf

    with override_settings(
        ROOT_URLCONF="django_path_urls",
        APPEND_SLASH=True,
        MIDDLEWARE=[
            "consumer_auth.contrib.django.middleware.ConsumerAuthMiddleware",
            "django.middleware.common.CommonMiddleware",
        ],
        CONSUMER_AUTH=config("reject"),
    ):
        yield
    conf.reset()


def test_werkzeug_map_in_flask() -> None:
    check_flask()()


def test_django_url_resolver_with_append_slash(django_settings: None) -> None:
    check_django()()


def test_starlette_router() -> None:
    check_starlette()()


def test_servlet_reading_through_the_proxy() -> None:
    check_servlet()()


def test_iis_reading_through_the_proxy() -> None:
    check_iis()()


# -- the differential can fail -------------------------------------------------------------------------------


def _no_hidden_dots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("consumer_auth.sansio._paths._hidden_dot_segment", lambda segment: False)


def _no_control_check(monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    monkeypatch.setattr("consumer_auth.sansio._paths._CONTROL", re.compile(r"(?!)"))


def _no_lenient_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("consumer_auth.sansio._paths.lenient_reading", lambda path: path)


def _no_fragment_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("consumer_auth.asgi.cut_fragment", lambda path, raw: path)


def _no_mismatch_404(monkeypatch: pytest.MonkeyPatch) -> None:
    from consumer_auth.sansio.routing import RouteIndex

    match = RouteIndex.match

    def loose_never(self: RouteIndex, method: str, path: str, host: str | None, **kwargs: Any) -> Any:
        return None if kwargs.get("any_method_or_host") else match(self, method, path, host)

    monkeypatch.setattr(RouteIndex, "match", loose_never)


def _no_case_folding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("consumer_auth.sansio.gateway.other_readings", _unfolded)


def _unfolded(index: Any, *, mounted: bool, case_insensitive: bool) -> Any:
    from consumer_auth.sansio.routing import other_readings

    return other_readings(index, mounted=mounted, case_insensitive=False)


@pytest.mark.parametrize(
    ("disable", "check"),
    [
        pytest.param(_no_hidden_dots, check_iis, id="hidden-dot-segments-iis"),
        pytest.param(_no_control_check, check_starlette, id="control-characters-starlette"),
        pytest.param(_no_lenient_reading, check_servlet, id="lenient-reading-servlet"),
        pytest.param(_no_fragment_cut, check_servlet, id="fragment-cut-servlet"),
        pytest.param(_no_mismatch_404, check_flask, id="host-method-mismatch-flask"),
        pytest.param(_no_case_folding, check_iis, id="case-insensitive-iis"),
    ],
)
def test_a_broken_rule_is_caught(
    monkeypatch: pytest.MonkeyPatch,
    disable: Callable[[pytest.MonkeyPatch], None],
    check: Callable[[settings], Callable[[], None]],
) -> None:
    disable(monkeypatch)
    with pytest.raises(AssertionError):
        check(BROKEN_RUNS)()
