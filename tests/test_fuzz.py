"""Property-based tests: whatever a client sends, every mode answers with a SPEC response.

Arbitrary ``Authorization`` values, header sets, hosts, paths and methods go through every registered
mode (``support.MODES``: the adapters, the proxies, the framework integrations) against every named
configuration. The answer must be the app's (with identity headers that only the gateway set) or one
of the SPEC's rejections, byte for byte; never an exception, never anything else. (A framework's own
refusal of a request the gateway let through — 405 or 501 for a method it lacks, 400 for a Host it
considers invalid — is the app's answer too.)

Runs are deterministic (``derandomize=True``, no example database) and bounded: together the modes run
at least ``TOTAL_EXAMPLES`` examples, shared equally.
"""

from __future__ import annotations

import base64
import json
import math
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import configs
from consumer_auth import Gateway, Pending, RequestFacts
from consumer_auth.sansio.credentials import BasicCredentials, ParseFailure, parse_authorization
from consumer_auth.sansio.decision import Allow, Reject
from support import MODES, Mode, Reply, basic

T = TypeVar("T")

TOTAL_EXAMPLES = 10_000
"""Examples across all modes together (each mode runs its equal share, rounded up)."""
CORE_EXAMPLES = 1_000
"""Examples of the core-only properties (not counted in ``TOTAL_EXAMPLES``)."""

TEXT_PLAIN = "text/plain; charset=utf-8"
SPEC_401 = (
    "Missing authorization in request",
    "Invalid authorization in request",
    "Missing related consumer",
    "Invalid user key in authorization",
    "Password is error",
    "Invalid user authorization",
    "Missing authentication or identity verification.",
)
IDENTITY = ("x-consumer-username", "x-credential-identifier", "x-consumer-custom-id")
CONFIG_NAMES = sorted(configs.CONFIGS)  # the fixed configurations, as collected


def _body(key: str, message: str) -> bytes:
    return json.dumps({key: message}, separators=(",", ":")).encode() + b"\n"


def _restrictions(document: dict[str, Any]) -> Iterable[tuple[int, str]]:
    owners = ("routes", "services", "consumers", "consumer_groups")  # every level plugins come from
    for owner in (item for key in owners for item in document.get(key, ())):
        plugin = (owner.get("plugins") or {}).get("consumer-restriction")
        if plugin is not None:
            kind = plugin.get("type", "consumer_name")
            yield (plugin.get("rejected_code", 403), plugin.get("rejected_msg", f"The {kind} is forbidden."))
            if kind == "consumer_group_id":  # a consumer in no group
                yield (401, f"The request is rejected, please check the {kind} for this request")


def allowed_rejections(name: str) -> frozenset[tuple[int, bytes]]:
    """Every (status, body) the SPEC lets this configuration answer with, besides the app's own."""
    document = configs.CONFIGS[name]
    allowed = {(401, _body("message", message)) for message in SPEC_401}
    allowed.add((404, _body("error_msg", "404 Route Not Found")))
    allowed.add((400, _body("error_msg", "400 Bad Request")))  # SPEC §8: a request read two ways
    allowed.update((code, _body("message", message)) for code, message in _restrictions(document))
    return frozenset(allowed)


@dataclass(frozen=True)
class Request:
    config: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]


# --- strategies -------------------------------------------------------------------------------------

_TOKEN = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
_VISIBLE = "".join(chr(c) for c in range(0x21, 0x7F))
_FIELD = _VISIBLE + " \t" + "".join(chr(c) for c in range(0x80, 0x100))  # obs-text too
_PATH_SAFE = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/"
# Framing and connection headers belong to the proxy hardening tests, not to this property.
_RESERVED = {
    "host",
    "authorization",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "expect",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "http2-settings",
}
_USERS = ("alex", "foo", "jack2019", "jack2020", "jack-new", "plain", "jürgen", "guest", "nobody", "")
_PASSWORDS = ("123456", "bar", "p:ss:word", "rotated", "pw", "pässword", "", "wrong")
_PREFIXES = (
    "/",
    "/v1/json",
    "/v1/",
    "/json",
    "/json/",
    "/hello",
    "/echo-hidden",
    "/realm",
    "/id",
    "/anon",
    "/anon-restricted",
    "/open",
    "/white",
    "/black",
    "/post-only",
    "/teapot",
    "/prio",
    "/hosted",
    "/api/items",
    "/svc/x",
    "/many-b/",
    "/public/../",
)
_HOSTS = (
    "example.com",
    "EXAMPLE.com:9080",
    "a.example.com",
    "api.example.com",
    "other.test",
    "localhost",
    "[::1]:80",
)


class Draws:
    """Choices read from one byte string: each byte picks an option, so zero bytes pick the first.

    Hypothesis draws a request as one ``binary`` value and shrinks it towards fewer and smaller
    bytes, hence towards the first options (``GET /`` without headers): one draw per example keeps a
    request cheap to generate, and the example budget affordable.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def byte(self) -> int:
        if self._at >= len(self._data):
            return 0
        value = self._data[self._at]
        self._at += 1
        return value

    def pick(self, options: Sequence[T]) -> T:
        return options[self.byte() % len(options)]

    def chance(self, one_in: int) -> bool:
        return self.byte() % one_in == one_in - 1

    def chars(self, alphabet: str, max_size: int) -> str:
        size = self.byte() % (max_size + 1)
        return "".join(alphabet[self.byte() % len(alphabet)] for _ in range(size))

    def raw(self, max_size: int) -> bytes:
        return bytes(self.byte() for _ in range(self.byte() % (max_size + 1)))


def _b64(raw: bytes, pad: bool) -> str:
    token = base64.b64encode(raw).decode()
    return token if pad else token.rstrip("=")


def _field(draws: Draws, max_size: int = 40) -> str:
    return draws.chars(_FIELD, max_size).strip()


def _text(draws: Draws) -> str:
    return draws.raw(12).decode("utf-8", "replace")


_SCHEMES = ("Basic", "basic", "BASIC", "bAsIc", "Bearer", "Basic:", "Digest", "")
_SPACES = (" ", "  ", "\t", "")


def _authorization(draws: Draws, logins: tuple[tuple[str, str], ...] = (("alex", "123456"),)) -> str:
    kind = draws.byte() % 6
    if kind <= 2:  # Basic credentials, mostly of configured users, with scheme, spacing, padding varied
        user, password = draws.pick(logins)
        if draws.chance(3):
            user = draws.pick(_USERS) if draws.byte() % 4 else _text(draws)
        if draws.chance(3):
            password = draws.pick(_PASSWORDS) if draws.byte() % 4 else _text(draws)
        encoding = "latin-1" if draws.chance(4) else "utf-8"
        try:
            raw = f"{user}:{password}".encode(encoding)
        except UnicodeEncodeError:
            raw = f"{user}:{password}".encode("utf-8", "surrogatepass")
        scheme = "Basic" if draws.byte() % 2 == 0 else draws.pick(_SCHEMES)
        spaces = " " if draws.byte() % 2 == 0 else draws.pick(_SPACES)
        return f"{scheme}{spaces}{_b64(raw, not draws.chance(3))}"
    if kind == 3:
        return "Basic " + draws.chars(string.ascii_letters + string.digits + "+/=-_!", 40)
    if kind == 4:
        return "Basic " + base64.b64encode(draws.raw(40)).decode()
    return _field(draws)


_SPOOFABLE = (
    "X-Consumer-Username",
    "X-Credential-Identifier",
    "X-Consumer-Custom-ID",
    "X-Forwarded-For",
    "X-Real-IP",
)
_HOST_CHARS = string.ascii_letters + string.digits + ".-"
_PIECES = ("..", ".", "//", "/", "%2F", "%2e%2e", "%00", "%FF", "%C3%A9", "%", "%zz", "%20")
_METHODS = ("GET", "GET", "GET", "GET", "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class Targets:
    """What a configuration's routes match and its consumers log in with, so most requests get far."""

    paths: tuple[str, ...]
    hosts: tuple[str, ...]
    logins: tuple[tuple[str, str], ...]


def _logins(document: dict[str, Any]) -> Iterable[tuple[str, str]]:
    for consumer in document.get("consumers", ()):
        entries = [consumer, *consumer.get("credentials", ())]
        for entry in entries:
            plugin = (entry.get("plugins") or {}).get("basic-auth")
            if plugin is not None and "password" in plugin:
                yield plugin["username"], plugin["password"]


def _targets(document: dict[str, Any]) -> Targets:
    services = {service.get("id", service.get("name")): service for service in document.get("services", ())}
    paths: list[str] = []
    hosts: list[str] = ["example.com"]
    for route in document.get("routes", ()):
        service = services.get(route.get("service_id"), {})
        prefix = (service.get("path_prefix") or "").rstrip("/")
        for uri in route.get("uris") or [route["uri"]]:
            full = f"{prefix}/{uri.lstrip('/')}" if prefix else uri
            paths.append(full[:-1] + "x" if full.endswith("*") else full)
        for host in (*(route.get("hosts") or ()), *(service.get("hosts") or ())):
            hosts.append("a" + host[1:] if host.startswith("*") else host)
    return Targets(tuple(paths) or ("/",), tuple(hosts), tuple(_logins(document)) or (("alex", "123456"),))


TARGETS = {name: _targets(configs.CONFIGS[name]) for name in CONFIG_NAMES}


def _host(draws: Draws, known: tuple[str, ...]) -> str | None:
    kind = draws.byte() % 8
    if kind == 0:
        return None
    if kind <= 4:
        return draws.pick(known)
    if kind == 5:
        return draws.pick(_HOSTS)
    name = draws.chars(_HOST_CHARS, 24) or "h"
    return f"{name}:{draws.byte() * 400 + draws.byte()}" if kind == 7 else name


def _path(draws: Draws, known: tuple[str, ...]) -> str:
    path = draws.pick(_PREFIXES) if draws.chance(6) else draws.pick(known)
    if draws.chance(4):
        for _ in range(draws.byte() % 5):
            path += draws.pick(_PIECES) if draws.chance(2) else draws.chars(_PATH_SAFE, 8)
    if draws.chance(4):
        path += "?" + draws.chars(_PATH_SAFE + "?", 12)
    return path


def decode_request(data: bytes) -> Request:
    """The request a byte string stands for (every byte string stands for one)."""
    draws = Draws(data)
    config = draws.pick(CONFIG_NAMES)
    targets = TARGETS[config]
    method = draws.pick(_METHODS) if draws.byte() % 8 else (draws.chars(string.ascii_uppercase, 10) or "X")
    path = _path(draws, targets.paths)
    headers: list[tuple[str, str]] = []
    host = _host(draws, targets.hosts)
    if host is not None:
        headers.append(("Host", host))
    for _ in range(draws.pick((1, 0, 1, 1, 0, 2, 1, 3))):
        headers.append(("Authorization", _authorization(draws, targets.logins)))
    for _ in range(draws.byte() % 5):
        if draws.chance(2):
            name = draws.pick(_SPOOFABLE)
        else:
            name = draws.chars(_TOKEN, 16) or "X"
            if name.lower() in _RESERVED:
                continue
        headers.append((name, _field(draws)))
    return Request(config, method, path, tuple(headers))


requests = st.binary(min_size=160, max_size=512).map(decode_request)
authorization_values = st.binary(max_size=64).map(lambda data: _authorization(Draws(data)))


# --- the property -----------------------------------------------------------------------------------


_ECHO_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
"""Methods every echo app accepts; a framework's own router answers 405 to the others."""


_PARSER_METHODS = frozenset(
    [
        "DELETE",
        "GET",
        "HEAD",
        "POST",
        "PUT",
        "CONNECT",
        "OPTIONS",
        "TRACE",
        "COPY",
        "LOCK",
        "MKCOL",
        "MOVE",
        "PROPFIND",
        "PROPPATCH",
        "SEARCH",
        "UNLOCK",
        "BIND",
        "REBIND",
        "UNBIND",
        "ACL",
        "REPORT",
        "MKACTIVITY",
        "CHECKOUT",
        "MERGE",
        "M-SEARCH",
        "NOTIFY",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "PATCH",
        "PURGE",
        "MKCALENDAR",
        "LINK",
        "UNLINK",
        "SOURCE",
        "QUERY",
    ]
)
"""Methods llhttp (uvicorn's parser, in the proxy modes) knows; it refuses other tokens with a 400."""


def check_reply(request: Request, reply: Reply) -> None:
    """The reply is the app's own answer or a SPEC rejection, exactly."""
    if reply.status == 400 and request.method not in _PARSER_METHODS:
        return  # an HTTP server's parser refused the method token before any gateway code ran
    if reply.status in (400, 405, 501) and reply.headers.get("content-type") != TEXT_PLAIN:
        # The gateway let the request through and the app refused it itself: a framework's router or an
        # upstream server that lacks the method (405, or 501 from Python's http.server), or a framework
        # that finds the Host invalid (400). Any other 5xx is never acceptable.
        assert reply.status == 400 or request.method not in _ECHO_METHODS
        return
    if reply.status == 200 and reply.headers.get("content-type") == "application/json":
        seen = json.loads(reply.body) if request.method != "HEAD" else None
        if seen is None:
            return
        consumer = seen["consumer"]
        forwarded = seen["headers"]
        if consumer is None:
            assert not any(name in forwarded for name in IDENTITY), forwarded
        else:
            assert forwarded.get("x-consumer-username") == consumer, forwarded
        return
    body = reply.body if request.method != "HEAD" else None
    assert reply.headers.get("content-type") == TEXT_PLAIN, (reply.status, reply.headers, reply.body)
    allowed = allowed_rejections(request.config)
    if body is None:
        assert reply.status in {status for status, _ in allowed}, reply.status
        assert reply.body == b""
    else:
        assert (reply.status, body) in allowed, (reply.status, body)
        assert reply.headers.get("content-length") == str(len(body))


def per_mode_examples() -> int:
    return math.ceil(TOTAL_EXAMPLES / len(MODES))


def test_budget_covers_the_total() -> None:
    assert per_mode_examples() * len(MODES) >= TOTAL_EXAMPLES


def test_every_mode_answers_any_request_with_a_spec_response(mode: Mode) -> None:
    budget = per_mode_examples()
    ran = 0

    @settings(
        max_examples=budget,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(requests)
    def one(request: Request) -> None:
        nonlocal ran
        ran += 1
        reply = mode.request(request.config, request.method, request.path, list(request.headers))
        check_reply(request, reply)

    one()
    assert ran >= budget, f"{mode.name} ran {ran} examples, expected {budget}"


# --- the core alone -------------------------------------------------------------------------------

_CORE = settings(max_examples=CORE_EXAMPLES, derandomize=True, database=None, deadline=None)


@_CORE
@given(st.lists(st.text(max_size=40) | authorization_values, max_size=3))
def test_parsing_never_raises(values: list[str]) -> None:
    parsed = parse_authorization(values)
    assert isinstance(parsed, BasicCredentials | ParseFailure)
    if isinstance(parsed, BasicCredentials):
        assert len(values) == 1
        assert repr(parsed) == f"BasicCredentials(username={parsed.username!r}, password=<hidden>)"


@_CORE
@given(
    st.sampled_from(CONFIG_NAMES),
    st.text(max_size=12),
    st.text(max_size=40),
    st.none() | st.text(max_size=30),
    st.lists(st.text(max_size=60) | authorization_values, max_size=3),
    st.none() | st.text(max_size=40),
    st.lists(st.text(max_size=60), max_size=2),
)
def test_the_core_decides_any_facts(
    name: str,
    method: str,
    path: str,
    host: str | None,
    authorization: list[str],
    client: str | None,
    forwarded_for: list[str],
) -> None:
    gateway: Gateway = configs.gateway(name)
    facts = RequestFacts(method, path, host, tuple(authorization), client, tuple(forwarded_for))
    decision = gateway.decide(facts)
    if isinstance(decision, Pending):
        decision = decision.run()
    assert isinstance(decision, Allow | Reject)
    if isinstance(decision, Reject):
        assert (decision.status, decision.body) in allowed_rejections(name)


def test_basic_helper_round_trips() -> None:
    assert parse_authorization([basic("a", "b:c")]) == BasicCredentials("a", "b:c")
