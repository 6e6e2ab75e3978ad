"""The conformance table: SPEC §2-§4 with exact bytes, run through every mode (see ``conftest.mode``).

Each row names a configuration (``configs.py``), a request, and what the client must get back:
either a :class:`Rejected` answer, checked byte for byte, or a :class:`Passed` request, checked by
what the app or upstream saw.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

import pytest

from support import Headers, Mode, basic

TEXT_PLAIN = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Rejected:
    status: int
    message: str
    www_authenticate: str | None = None
    key: str = "message"


@dataclass(frozen=True)
class Passed:
    path: str = "/hello"
    consumer: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    absent: tuple[str, ...] = ()
    query: str = ""


NOT_FOUND = Rejected(404, "404 Route Not Found", key="error_msg")
BAD_REQUEST = Rejected(400, "400 Bad Request", key="error_msg")
MISSING = Rejected(401, "Missing authorization in request", "Basic realm='.'")
ALEX = basic("alex", "123456")

# Segments Tomcat, Jetty, Spring (`..;`), IIS (`..\`) or a double-decoding server read as `..` or `.`, and
# control characters (Python's `$` matches before a final newline): 400 in every mode (SPEC §8).
HIDDEN_DOTS_AND_CONTROLS = [
    ("dotdot-semicolon", "/v1/pub/..;/admin/x"),
    ("encoded-dotdot-semicolon", "/v1/pub/%2e%2e;/admin/x"),
    ("dotdot-encoded-semicolon", "/v1/pub/..%3b/admin/x"),
    ("dotdot-params", "/v1/pub/..;x/admin/x"),
    ("twice", "/v1/pub/x/..;/..;/admin/x"),
    ("dot-semicolon", "/v1/pub/.;/x"),
    ("dotdot-backslash", "/v1/pub/..%5cadmin%5cx"),
    ("encoded-dotdot-backslash", "/v1/pub/%2e%2e%5cadmin"),
    ("double-encoded-dotdot", "/v1/pub/%252e%252e/admin/x"),
    ("trailing-newline", "/v1/admin%0A"),
    ("newline-public", "/v1/pub/x%0a"),
    ("nul", "/v1/pub/a%00"),
    ("del", "/v1/pub/%7f"),
    ("tab", "/v1/pub/a%09b"),
]

# Readings of a guarded path that servlet containers, IIS or Windows make (SPEC §8, unmatched: pass).
LENIENT = [
    ("params", "/v1/admin;x=1/x"),
    ("params-on-prefix", "/v1;a/admin/x"),
    ("params-exact", "/v1/admin;x=1"),
    ("params-segment", "/v1/admin;/x"),
    ("backslash", "/v1/admin%5cx"),
    ("trailing-dot", "/v1/admin%2e"),
    ("trailing-dot-segment", "/v1/admin./x"),
    ("trailing-space", "/v1/admin%20/x"),
]
CLASSIC_CHALLENGE = "Basic realm='.'"
APISIX3_CHALLENGE = 'Basic realm="basic"'


def raw(value: bytes) -> str:
    return "Basic " + base64.b64encode(value).decode()


FOO = basic("foo", "bar")
J1 = basic("jack2019", "123456")
J2 = basic("jack2020", "123456")
EX = ("Host", "example.com")


def row(
    config: str, method: str, path: str, headers: Headers, expected: Rejected | Passed, *, id: str
) -> object:
    return pytest.param(config, method, path, list(headers), expected, id=id)


# fmt: off
CASES = [
    # --- the guide's four curl commands (SPEC §2.1 classic) ---
    row("guide", "GET", "/v1/json", [EX], Rejected(401, "Missing authorization in request", CLASSIC_CHALLENGE), id="guide-no-credentials"),
    row("guide", "GET", "/v1/json", [EX, ("Authorization", basic("alex", "123456"))], Passed("/json", "alex", {"x-consumer-username": "alex", "authorization": basic("alex", "123456")}), id="guide-alex"),
    row("guide", "GET", "/v1/json", [EX, ("Authorization", basic("wrong-user", "wrong-password"))], Rejected(401, "Invalid user key in authorization"), id="guide-wrong-user"),
    row("guide", "GET", "/v1/json", [EX, ("Authorization", basic("alex", "wrong-password"))], Rejected(401, "Password is error"), id="guide-wrong-password"),
    row("guide", "GET", "/v1/json?x=1&y=%2F", [EX, ("Authorization", basic("alex", "123456"))], Passed("/json", "alex", query="x=1&y=%2F"), id="guide-query-kept"),
    row("guide", "GET", "/v1/json", [("Host", "EXAMPLE.com:9080"), ("Authorization", basic("alex", "123456"))], Passed("/json", "alex"), id="guide-host-case-and-port"),
    row("guide", "GET", "/v1/json", [("Host", "other.com")], NOT_FOUND, id="guide-wrong-host"),
    row("guide", "POST", "/v1/json", [EX], NOT_FOUND, id="guide-wrong-method-is-404"),
    row("guide", "GET", "/json", [EX], NOT_FOUND, id="guide-without-prefix"),
    row("guide", "GET", "/v1/json/more", [EX], NOT_FOUND, id="guide-exact-only"),
    # --- profile apisix-3 (SPEC §2.1) ---
    row("guide-apisix3", "GET", "/v1/json", [EX], Rejected(401, "Missing authorization in request", APISIX3_CHALLENGE), id="apisix3-no-credentials"),
    row("guide-apisix3", "GET", "/v1/json", [EX, ("Authorization", "Bearer abc")], Rejected(401, "Invalid authorization in request", APISIX3_CHALLENGE), id="apisix3-invalid"),
    row("guide-apisix3", "GET", "/v1/json", [EX, ("Authorization", basic("wrong-user", "x"))], Rejected(401, "Invalid user authorization", APISIX3_CHALLENGE), id="apisix3-unknown-user"),
    row("guide-apisix3", "GET", "/v1/json", [EX, ("Authorization", basic("alex", "x"))], Rejected(401, "Invalid user authorization", APISIX3_CHALLENGE), id="apisix3-wrong-password"),
    row("guide-apisix3", "GET", "/v1/json", [EX, ("Authorization", basic("alex", "123456"))], Passed("/json", "alex"), id="apisix3-alex"),
    row("no-credentials", "GET", "/hello", [("Authorization", FOO)], Rejected(401, "Missing related consumer"), id="classic-no-consumer-has-credentials"),
    row("no-credentials-apisix3", "GET", "/hello", [("Authorization", FOO)], Rejected(401, "Invalid user authorization", APISIX3_CHALLENGE), id="apisix3-no-consumer-has-credentials"),
    row("no-credentials", "GET", "/hello", [], Rejected(401, "Missing authorization in request", CLASSIC_CHALLENGE), id="classic-no-credentials-missing-header-first"),
    row("apisix", "GET", "/realm", [], Rejected(401, "Missing authorization in request", "Basic realm='secure-zone'"), id="classic-custom-realm"),
    row("apisix-3", "GET", "/realm", [], Rejected(401, "Missing authorization in request", 'Basic realm="secure-zone"'), id="apisix3-custom-realm"),
    row("apisix-3", "GET", "/realm", [("Authorization", "Basic YmFy")], Rejected(401, "Invalid authorization in request", 'Basic realm="secure-zone"'), id="apisix3-realm-on-every-401"),
    # --- APISIX t/plugin/basic-auth.t, with SPEC §2.2 parsing ---
    row("apisix", "GET", "/hello", [], Rejected(401, "Missing authorization in request", CLASSIC_CHALLENGE), id="t-basic-auth-missing"),
    row("apisix", "GET", "/hello", [("Authorization", "Bad_header YmFyOmJhcgo=")], Rejected(401, "Invalid authorization in request"), id="t-basic-auth-bad-scheme"),
    row("apisix", "GET", "/hello", [("Authorization", "Basic aca_a")], Rejected(401, "Invalid authorization in request"), id="t-basic-auth-bad-base64"),
    row("apisix", "GET", "/hello", [("Authorization", "Basic YmFy")], Rejected(401, "Invalid authorization in request"), id="t-basic-auth-no-colon"),
    row("apisix", "GET", "/hello", [("Authorization", "Basic YmFyOmJhcgo=")], Rejected(401, "Invalid user key in authorization"), id="t-basic-auth-unknown-user"),
    row("apisix", "GET", "/hello", [("Authorization", "Basic Zm9vOmZvbwo=")], Rejected(401, "Password is error"), id="t-basic-auth-wrong-password-newline-kept"),
    row("apisix", "GET", "/hello", [("Authorization", "Basic Zm9vOmJhcg==")], Passed(consumer="foo"), id="t-basic-auth-ok"),
    row("apisix", "GET", "/hello", [("Authorization", "basic Zm9vOmJhcg==")], Passed(consumer="foo"), id="t-basic-auth-scheme-lower"),
    row("apisix", "GET", "/hello", [("Authorization", "BASIC Zm9vOmJhcg==")], Passed(consumer="foo"), id="t-basic-auth-scheme-upper"),
    row("apisix", "GET", "/hello", [("Authorization", "bASiC Zm9vOmJhcg==")], Passed(consumer="foo"), id="t-basic-auth-scheme-mixed"),
    row("apisix", "GET", "/echo-hidden", [("Authorization", FOO)], Passed("/echo-hidden", "foo", absent=("authorization",)), id="t-basic-auth-hide-credentials"),
    row("apisix", "GET", "/echo-shown", [("Authorization", FOO)], Passed("/echo-shown", "foo", {"authorization": FOO}), id="t-basic-auth-keep-credentials"),
    row("apisix", "GET", "/hello", [("Authorization", "Basic    Zm9vOmJhcg==")], Passed(consumer="foo"), id="parse-several-spaces"),
    row("apisix", "GET", "/hello", [("Authorization", "Basic\tZm9vOmJhcg==")], Rejected(401, "Invalid authorization in request"), id="parse-tab-is-not-a-space"),
    row("apisix", "GET", "/hello", [("Authorization", "Basic Zm9vOmJhcg")], Passed(consumer="foo"), id="parse-missing-padding"),
    row("apisix", "GET", "/hello", [("Authorization", "Basic Zm9vOmJhcg==garbage")], Rejected(401, "Invalid authorization in request"), id="parse-text-after-padding"),
    row("apisix", "GET", "/hello", [("Authorization", "Basic Zm9v-mJhcg==")], Rejected(401, "Invalid authorization in request"), id="parse-urlsafe-alphabet"),
    row("apisix", "GET", "/hello", [("Authorization", "Basic Z")], Rejected(401, "Invalid authorization in request"), id="parse-impossible-length"),
    row("apisix", "GET", "/hello", [("Authorization", "Basic")], Rejected(401, "Invalid authorization in request"), id="parse-scheme-only"),
    row("apisix", "GET", "/hello", [("Authorization", "")], Rejected(401, "Invalid authorization in request"), id="parse-empty-header"),
    row("apisix", "GET", "/hello", [("Authorization", "Bearer Zm9vOmJhcg==")], Rejected(401, "Invalid authorization in request"), id="parse-other-scheme"),
    row("apisix", "GET", "/hello", [("Authorization", "Basic Zm9vOmJhcg=="), ("Authorization", FOO)], Rejected(401, "Invalid authorization in request"), id="parse-two-headers"),
    row("apisix", "GET", "/hello", [("Authorization", basic("foo", ""))], Rejected(401, "Password is error"), id="parse-empty-password-never-authenticates"),
    row("apisix", "GET", "/hello", [("Authorization", basic("", "bar"))], Rejected(401, "Invalid user key in authorization"), id="parse-empty-username"),
    row("apisix", "GET", "/hello", [("Authorization", basic(" foo", "bar"))], Rejected(401, "Invalid user key in authorization"), id="parse-nothing-stripped-in-username"),
    row("apisix", "GET", "/hello", [("Authorization", basic("foo", "bar "))], Rejected(401, "Password is error"), id="parse-nothing-stripped-in-password"),
    row("identity", "GET", "/id", [("Authorization", basic("jack2019", "p:ss:word"))], Passed("/id", "jack1"), id="parse-split-on-first-colon"),
    row("identity", "GET", "/id", [("Authorization", raw("jürgen:pässword".encode()))], Passed("/id", "umlaut"), id="parse-utf8"),
    row("identity", "GET", "/id", [("Authorization", raw("jürgen:pässword".encode("latin-1")))], Passed("/id", "umlaut"), id="parse-latin1-fallback"),
    # --- identity headers and the anonymous consumer (SPEC §2.3, §2.4) ---
    row("identity", "GET", "/id", [("Authorization", basic("jack2019", "p:ss:word"))], Passed("/id", "jack1", {"x-consumer-username": "jack1", "x-credential-identifier": "cred-1", "x-consumer-custom-id": "cust-42"}), id="identity-headers"),
    row("identity", "GET", "/id", [("Authorization", basic("jack-new", "rotated"))], Passed("/id", "jack1", {"x-credential-identifier": "cred-2"}), id="identity-second-credential"),
    row("identity", "GET", "/id", [("Authorization", basic("plain", "pw")), ("X-Consumer-Username", "admin"), ("X-Credential-Identifier", "forged"), ("X-Consumer-Custom-ID", "forged")], Passed("/id", "plain", {"x-consumer-username": "plain"}, absent=("x-credential-identifier", "x-consumer-custom-id")), id="identity-spoofing-replaced"),
    row("identity", "GET", "/open", [("X-Consumer-Username", "admin"), ("X-Credential-Identifier", "x"), ("X-Consumer-Custom-ID", "y")], Passed("/open", None, absent=("x-consumer-username", "x-credential-identifier", "x-consumer-custom-id")), id="identity-spoofing-removed-without-auth"),
    row("identity", "GET", "/anon", [], Passed("/anon", "guest", {"x-consumer-username": "guest", "x-consumer-custom-id": "anon"}), id="anonymous-without-credentials"),
    row("identity", "GET", "/anon", [("Authorization", basic("jack2019", "wrong"))], Passed("/anon", "guest"), id="anonymous-on-wrong-password"),
    row("identity", "GET", "/anon", [("Authorization", "Basic !!")], Passed("/anon", "guest"), id="anonymous-on-invalid-header"),
    row("identity", "GET", "/anon", [("Authorization", basic("jack2019", "p:ss:word"))], Passed("/anon", "jack1"), id="anonymous-route-real-consumer"),
    row("identity", "GET", "/anon-restricted", [], Rejected(403, "The consumer_name is forbidden."), id="anonymous-then-restriction"),
    row("identity", "GET", "/anon-restricted", [("Authorization", basic("jack2019", "p:ss:word"))], Passed("/anon-restricted", "jack1"), id="anonymous-restriction-real-consumer"),
    # --- APISIX t/plugin/consumer-restriction.t (SPEC §3) ---
    row("restriction", "GET", "/white", [], Rejected(401, "Missing authorization in request", CLASSIC_CHALLENGE), id="t-restriction-whitelist-no-credentials"),
    row("restriction", "GET", "/white", [("Authorization", J1)], Passed("/white", "jack1"), id="t-restriction-whitelist-allowed"),
    row("restriction", "GET", "/white", [("Authorization", J2)], Rejected(403, "The consumer_name is forbidden."), id="t-restriction-whitelist-rejected"),
    row("restriction", "GET", "/black", [], Rejected(401, "Missing authorization in request", CLASSIC_CHALLENGE), id="t-restriction-blacklist-no-credentials"),
    row("restriction", "GET", "/black", [("Authorization", J1)], Rejected(403, "request is forbidden"), id="t-restriction-blacklist-rejected-msg"),
    row("restriction", "GET", "/black", [("Authorization", J2)], Passed("/black", "jack2"), id="t-restriction-blacklist-allowed"),
    row("restriction", "GET", "/white-only", [], Rejected(401, "Missing authentication or identity verification."), id="t-restriction-no-auth-plugin"),
    row("restriction", "GET", "/white-only", [("Authorization", J1)], Rejected(401, "Missing authentication or identity verification."), id="t-restriction-no-auth-plugin-j1"),
    row("restriction", "GET", "/black-only", [("Authorization", J2)], Rejected(401, "Missing authentication or identity verification."), id="t-restriction-blacklist-no-auth"),
    row("restriction", "GET", "/post-only", [("Authorization", J1)], Rejected(403, "The consumer_name is forbidden."), id="t-restriction-methods-rejected"),
    row("restriction", "POST", "/post-only", [("Authorization", J1)], Passed("/post-only", "jack1"), id="t-restriction-methods-allowed"),
    row("restriction", "GET", "/post-only", [("Authorization", J2)], Passed("/post-only", "jack2"), id="t-restriction-methods-unlisted-user"),
    row("restriction", "GET", "/post-get", [("Authorization", J1)], Passed("/post-get", "jack1"), id="t-restriction-methods-get-allowed"),
    row("restriction", "GET", "/black-methods", [("Authorization", J1)], Rejected(403, "The consumer_name is forbidden."), id="t-restriction-blacklist-beats-methods"),
    row("restriction", "GET", "/black-methods", [("Authorization", J2)], Passed("/black-methods", "jack2"), id="t-restriction-blacklist-methods-other"),
    row("restriction", "GET", "/white-methods", [("Authorization", J1)], Passed("/white-methods", "jack1"), id="t-restriction-whitelist-skips-methods"),
    row("restriction", "GET", "/white-methods", [("Authorization", J2)], Rejected(403, "The consumer_name is forbidden."), id="t-restriction-whitelist-methods-other"),
    row("restriction", "GET", "/teapot", [("Authorization", J1)], Rejected(418, "no tea"), id="restriction-rejected-code"),
    row("restriction", "GET", "/open", [("Authorization", J1)], Passed("/open", None, {"authorization": J1}), id="t-restriction-no-plugins"),
    row("restriction", "GET", "/open", [], Passed("/open", None), id="t-restriction-no-plugins-no-credentials"),
    # --- routing (SPEC §4) ---
    row("routing", "GET", "/json", [], Rejected(403, "exact-json"), id="route-exact"),
    row("routing", "GET", "/json/", [], Rejected(403, "prefix-json"), id="route-prefix-slash"),
    row("routing", "GET", "/json/a/b", [], Rejected(403, "prefix-json"), id="route-prefix-deep"),
    row("routing", "GET", "/json/deep/x", [], Rejected(403, "prefix-json-deep"), id="route-longer-prefix"),
    row("routing", "GET", "/json/deep", [], Rejected(403, "prefix-json"), id="route-prefix-not-itself"),
    row("routing", "GET", "/jsonx", [], NOT_FOUND, id="route-no-partial-segment"),
    row("routing", "GET", "/prio", [], Rejected(403, "prio-high"), id="route-priority"),
    row("routing", "POST", "/prio", [], Rejected(403, "prio-post"), id="route-priority-with-method"),
    row("routing", "GET", "/tie", [], Rejected(403, "tie-first"), id="route-tie-config-order"),
    row("routing", "GET", "/hosted", [("Host", "example.com")], Rejected(403, "hosted-exact"), id="route-host"),
    row("routing", "GET", "/hosted", [("Host", "Example.COM:8080")], Rejected(403, "hosted-exact"), id="route-host-case-port"),
    row("routing", "GET", "/hosted", [("Host", "a.example.com")], Rejected(403, "hosted-wild"), id="route-host-wildcard"),
    row("routing", "GET", "/hosted", [("Host", "a.b.example.com")], Rejected(403, "hosted-wild"), id="route-host-wildcard-deep"),
    row("routing", "GET", "/hosted", [("Host", "badexample.com")], NOT_FOUND, id="route-host-wildcard-boundary"),
    row("routing", "GET", "/hosted", [("Host", "other.test")], NOT_FOUND, id="route-host-mismatch"),
    row("routing", "GET", "/methods", [], Rejected(403, "methods-get"), id="route-method"),
    row("routing", "DELETE", "/methods", [], NOT_FOUND, id="route-method-mismatch-404"),
    row("routing", "GET", "/api/items", [("Host", "api.example.com")], Rejected(403, "api-items"), id="route-service-hosts"),
    row("routing", "GET", "/api/items", [("Host", "other.test")], Rejected(403, "api-items-override"), id="route-hosts-override-service"),
    row("routing", "GET", "/api/items", [("Host", "nope.test")], NOT_FOUND, id="route-service-host-mismatch"),
    row("routing", "GET", "/svc/any/thing", [], Rejected(403, "anyhost-all"), id="route-service-prefix-star"),
    row("routing", "GET", "/many-a", [], Rejected(403, "uris"), id="route-uris-exact"),
    row("routing", "GET", "/many-b/x", [], Rejected(403, "uris"), id="route-uris-prefix"),
    row("routing", "GET", "/many-b", [], NOT_FOUND, id="route-uris-prefix-not-itself"),
    row("routing", "GET", "/public/../json", [], Rejected(403, "exact-json"), id="route-dot-segments"),
    row("routing", "GET", "//json", [], Rejected(403, "exact-json"), id="route-double-slash"),
    row("routing", "GET", "/nothing", [], NOT_FOUND, id="route-not-found"),
    row("unmatched-pass", "GET", "/nothing", [("X-Consumer-Username", "admin")], Passed("/nothing", None, absent=("x-consumer-username",)), id="unmatched-pass"),
    row("unmatched-pass", "GET", "/hello", [], Rejected(401, "Missing authorization in request", CLASSIC_CHALLENGE), id="unmatched-pass-still-guards-routes"),
    row("unmatched-pass", "HEAD", "/get-only", [], Rejected(401, "Missing authorization in request", CLASSIC_CHALLENGE), id="unmatched-pass-head-guarded-like-get"),
    row("apisix", "HEAD", "/get-only", [], NOT_FOUND, id="head-on-get-route-is-404-when-rejecting"),
    # SPEC §8, in every mode whatever `unmatched` says: hidden dot segments and control characters are 400.
    *[
        row(config, "GET", path, [], BAD_REQUEST, id=f"{config}-400-{name}")
        for config in ("paths", "paths-pass")
        for name, path in HIDDEN_DOTS_AND_CONTROLS
    ],
    row("paths", "GET", "/v1/pub/x", [], Passed("/v1/pub/x"), id="paths-public-passes"),
    row("paths", "GET", "/v1/pub/file.txt", [], Passed("/v1/pub/file.txt"), id="paths-public-file-passes"),
    row("paths", "GET", "/v1/pub/a;b=1", [], Passed("/v1/pub/a;b=1"), id="paths-public-params-pass"),
    row("paths", "GET", "/v1/pub/%2e%2e/admin/x", [], MISSING, id="paths-decoded-dots-resolved"),
    row("paths", "GET", "/v1/admin/x", [("Authorization", ALEX)], Passed("/v1/admin/x", "alex"), id="paths-guarded-with-credentials"),
    row("paths", "GET", "/v1/admin;x=1/x", [], NOT_FOUND, id="paths-reject-params-unmatched-404"),
    row("paths", "GET", "/v1/hosted/x", [("Host", "other.com")], NOT_FOUND, id="paths-reject-host-mismatch-404"),
    # §8 with `unmatched: pass`: the lenient reading decides; a host or method mismatch is 404, not passed.
    *[
        row("paths-pass", "GET", path, [], MISSING, id=f"pass-lenient-{name}")
        for name, path in LENIENT
    ],
    row("paths-pass", "GET", "/v1/hosted/x", [("Host", "other.com")], NOT_FOUND, id="pass-host-mismatch-404"),
    row("paths-pass", "GET", "/v1/hosted/x", [("Host", "example.com")], MISSING, id="pass-host-match-guarded"),
    row("paths-pass", "POST", "/v1/get-only", [], NOT_FOUND, id="pass-method-mismatch-404"),
    row("paths-pass", "PUT", "/v1/get-only;x", [], NOT_FOUND, id="pass-lenient-method-mismatch-404"),
    row("paths-pass", "HEAD", "/v1/get-only", [], MISSING, id="pass-head-guarded"),
    row("paths-pass", "GET", "/health", [], Passed("/health"), id="pass-unrouted-passes"),
    row("paths-pass", "GET", "/v1/pub;x/a", [], Passed("/v1/pub;x/a"), id="pass-lenient-public-passes"),
    row("paths-pass", "GET", "/V1/ADMIN/x", [], Passed("/V1/ADMIN/x"), id="pass-case-sensitive-by-default"),
    row("paths-folded", "GET", "/V1/ADMIN/x", [], MISSING, id="folded-guarded-case-insensitively"),
    row("paths-folded", "GET", "/V1/Admin;x/y", [], MISSING, id="folded-lenient"),
    row("paths-folded", "GET", "/V1/PUB/x", [], Passed("/V1/PUB/x"), id="folded-public-passes"),
    # §8a: an anonymous consumer is not authenticated; the login that failed is not passed on.
    row("paths", "GET", "/v1/anon", [], Passed("/v1/anon", "guest"), id="anonymous-passes"),
    row("paths", "GET", "/v1/anon", [("Authorization", basic("alex", "bad"))], Passed("/v1/anon", "guest", absent=("authorization",)), id="anonymous-after-failure-drops-authorization"),
    row("paths", "GET", "/v1/anon", [("Authorization", ALEX)], Passed("/v1/anon", "alex", headers={"authorization": ALEX}), id="anonymous-route-authenticates"),
    # A guarded route below a stripped prefix is guarded at its stripped path too (unmatched: pass).
    row("mounted", "GET", "/json", [], MISSING, id="mounted-stripped-path-guarded"),
    row("mounted", "GET", "/v1/json", [], MISSING, id="mounted-full-path-guarded"),
    row("mounted", "GET", "/json", [("Authorization", ALEX)], Passed("/json", "alex"), id="mounted-stripped-path-with-credentials"),
    row("mounted", "GET", "/other", [], Passed("/other"), id="mounted-other-paths-pass"),
    # --- consumer groups (SPEC §9, §10): consumer > consumer group > route > service, wholesale ---
    *[
        row("groups", "GET", path, [("Authorization", basic(who, who))], expected, id=f"groups-{who}-{path.strip('/').replace('/', '-')}")
        for who, path, expected in list[tuple[str, str, Rejected | Passed]]([
            ("alex", "/svc/x", Rejected(403, "group free")),
            ("alex", "/route", Rejected(403, "group free")),
            ("alex", "/plain", Rejected(403, "group free")),
            ("bob", "/svc/x", Rejected(403, "service")),
            ("bob", "/route", Rejected(403, "route")),
            ("bob", "/plain", Passed("/plain", "bob")),
            ("carol", "/svc/x", Rejected(403, "consumer carol")),
            ("carol", "/route", Rejected(403, "consumer carol")),
            ("carol", "/plain", Rejected(403, "consumer carol")),
            ("dave", "/svc/x", Passed("/x", "dave")),
            ("dave", "/route", Passed("/route", "dave")),
            ("erin", "/svc/x", Rejected(403, "service")),
            ("erin", "/route", Rejected(403, "route")),
            ("erin", "/plain", Passed("/plain", "erin")),
            ("erin", "/by-group", Passed("/by-group", "erin")),
            ("frank", "/by-group", Rejected(403, "The consumer_group_id is forbidden.")),
            ("bob", "/by-group", Rejected(401, "The request is rejected, please check the consumer_group_id for this request")),
            ("frank", "/not-paid", Rejected(403, "The consumer_group_id is forbidden.")),
            ("erin", "/not-paid", Passed("/not-paid", "erin")),
            ("bob", "/not-paid", Rejected(401, "The request is rejected, please check the consumer_group_id for this request")),
        ])
    ],
    row("groups", "GET", "/anon", [], Rejected(403, "group free"), id="groups-anonymous-consumer-takes-its-group"),
    row("groups", "GET", "/unguarded-by-group", [], Rejected(401, "Missing authentication or identity verification."), id="groups-restriction-without-consumer"),
]
# fmt: on


@pytest.mark.parametrize(("config", "method", "path", "headers", "expected"), CASES)
def test_conformance(
    mode: Mode, config: str, method: str, path: str, headers: Headers, expected: Rejected | Passed
) -> None:
    reply = mode.request(config, method, path, headers)
    if isinstance(expected, Rejected):
        assert reply.status == expected.status, reply.body
        body = json.dumps({expected.key: expected.message}, separators=(",", ":")).encode() + b"\n"
        assert reply.body == (b"" if method == "HEAD" else body)
        assert reply.headers["content-type"] == TEXT_PLAIN
        assert reply.headers.get("www-authenticate") == expected.www_authenticate
        assert reply.headers["content-length"] == str(len(body))
        return
    seen = reply.seen()
    assert seen["method"] == method
    assert seen["path"] == expected.path
    assert seen["query"] == expected.query
    assert seen["consumer"] == expected.consumer
    for name, value in expected.headers.items():
        assert seen["headers"].get(name) == value, name
    for name in expected.absent:
        assert name not in seen["headers"], name
    if expected.consumer is None:
        assert "x-consumer-username" not in seen["headers"]


def test_head_rejection_has_no_body(mode: Mode) -> None:
    reply = mode.request("routing", "HEAD", "/methods", [])
    assert reply.status == 403
    assert reply.body == b""
    assert reply.headers["content-type"] == TEXT_PLAIN
