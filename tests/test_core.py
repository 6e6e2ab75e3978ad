"""Unit tests of the sans-IO core: header parsing, path and host rules, the route index, verifiers."""

from __future__ import annotations

import base64
import threading

import pytest

from consumer_auth import Allow, BasicAuthPlugin, Consumer, Gateway, Pending, Route
from consumer_auth.sansio.consumers import BasicAuthCredential, ConsumerIndex
from consumer_auth.sansio.credentials import BasicCredentials, ParseFailure, parse_authorization
from consumer_auth.sansio.decision import RequestFacts
from consumer_auth.sansio.passwords import Argon2Password, PlaintextPassword, hash_password
from consumer_auth.sansio.plugins import Profile
from consumer_auth.sansio.routing import RouteIndex, compile_route, normalize_host, normalize_path
from support import basic


def b64(text: bytes) -> str:
    return base64.b64encode(text).decode()


# fmt: off
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([], ParseFailure.MISSING, id="missing"),
        pytest.param(["Basic " + b64(b"a:b")], BasicCredentials("a", "b"), id="simple"),
        pytest.param(["  basic   " + b64(b"a:b") + " \t"], BasicCredentials("a", "b"), id="whitespace-and-case"),
        pytest.param(["Basic " + b64(b"a:b:c").rstrip("=")], BasicCredentials("a", "b:c"), id="first-colon-no-padding"),
        pytest.param(["Basic " + b64(b":")], BasicCredentials("", ""), id="empty-both"),
        pytest.param(["Basic " + b64(b" a : b ")], BasicCredentials(" a ", " b "), id="nothing-stripped"),
        pytest.param(["Basic " + b64("ü:é".encode())], BasicCredentials("ü", "é"), id="utf8"),
        pytest.param(["Basic " + b64("ü:é".encode("latin-1"))], BasicCredentials("ü", "é"), id="latin1"),
        pytest.param(["Basic " + b64(b"ab")], ParseFailure.INVALID, id="no-colon"),
        pytest.param(["Basic " + b64(b"")], ParseFailure.INVALID, id="empty-token"),
        pytest.param(["Basic a=b="], ParseFailure.INVALID, id="padding-inside"),
        pytest.param(["Basic YWI6Yw==="], ParseFailure.INVALID, id="too-much-padding"),
        pytest.param(["Basic YWI6Yw== x"], ParseFailure.INVALID, id="two-tokens"),
        pytest.param(["BasicYWI6Yw=="], ParseFailure.INVALID, id="no-space"),
        pytest.param(["Basic " + b64(b"a:b"), "Basic " + b64(b"a:b")], ParseFailure.INVALID, id="two-headers"),
        pytest.param(["Digest basic " + b64(b"a:b")], ParseFailure.INVALID, id="scheme-not-at-start"),
    ],
)
# fmt: on
def test_parse_authorization(values: list[str], expected: object) -> None:
    assert parse_authorization(values) == expected


def test_credentials_repr_hides_password() -> None:
    parsed = parse_authorization([basic("alex", "hunter2")])
    assert "hunter2" not in repr(parsed)
    credential = BasicAuthCredential("alex", "hunter2")
    assert "hunter2" not in repr(credential)
    assert "hunter2" not in repr(credential.verifier)
    hashed = hash_password("hunter2")
    assert hashed not in repr(BasicAuthCredential("alex", password_hash=hashed))


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("//a//b/", "/a/b/"),
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/../../a", "/a"),
        ("/a/..", "/"),
        ("/a/.", "/a/"),
        ("/a/b/..", "/a/"),
        ("/.hidden/x", "/.hidden/x"),
    ],
)
def test_normalize_path(path: str, normal: str) -> None:
    assert normalize_path(path) == normal


@pytest.mark.parametrize(
    ("host", "normal"),
    [
        ("Example.COM", "example.com"),
        ("example.com:8080", "example.com"),
        ("example.com.", "example.com"),
        ("[::1]:80", "[::1]"),
        ("", None),
        (None, None),
    ],
)
def test_normalize_host(host: str | None, normal: str | None) -> None:
    assert normalize_host(host) == normal


def test_route_index_many_routes() -> None:
    routes = [Route(f"/r{i}", id=f"exact-{i}") for i in range(10_000)]
    routes += [Route(f"/p{i}/*", id=f"prefix-{i}") for i in range(10_000)]
    index = RouteIndex([compile_route(r, None, i, Profile.CLASSIC) for i, r in enumerate(routes)])
    assert index.match("GET", "/r9999", None).id == "exact-9999"  # type: ignore[union-attr]
    assert index.match("GET", "/p1234/x/y", None).id == "prefix-1234"  # type: ignore[union-attr]
    assert index.match("GET", "/p12345/x", None) is None
    assert index._depth == 2  # a lookup tries at most two heads, whatever the number of routes


def test_unknown_username_runs_a_decoy_of_the_costliest_verifier() -> None:
    calls: list[str] = []

    class Recording(PlaintextPassword):
        slow = True

        def verify(self, password: str) -> bool:
            calls.append(password)
            return super().verify(password)

    index = ConsumerIndex([Consumer("alex", password="123456")])
    decoy = index.decoy
    assert isinstance(decoy, PlaintextPassword)
    assert not decoy.verify("123456")  # a decoy matches no real password
    argon = Consumer("bob", password_hash=hash_password("pw"))
    mixed = ConsumerIndex([Consumer("alex", password="123456"), argon])
    assert isinstance(mixed.decoy, Argon2Password)

    alex = Consumer("alex", password="123456")
    recording = Recording("123456")
    alex.credentials[0].verifier = recording
    gateway = Gateway(consumers=[alex], routes=[Route("/x", plugins=[BasicAuthPlugin()])])
    gateway._state.consumers._decoy = recording
    reply = gateway.decide_now(RequestFacts("GET", "/x", None, (basic("nobody", "guess"),)))
    assert reply.body == b'{"message":"Invalid user key in authorization"}\n'  # type: ignore[union-attr]
    assert calls == ["guess"]


def test_pending_only_for_slow_verifiers() -> None:
    hashed = Consumer("h", password_hash=hash_password("pw"))
    plain = Consumer("p", password="pw")
    gateway = Gateway(consumers=[hashed, plain], routes=[Route("/x", plugins=[BasicAuthPlugin()])])
    slow = gateway.decide(RequestFacts("GET", "/x", None, (basic("h", "pw"),)))
    fast = gateway.decide(RequestFacts("GET", "/x", None, (basic("p", "pw"),)))
    unknown = gateway.decide(RequestFacts("GET", "/x", None, (basic("nobody", "pw"),)))
    assert isinstance(slow, Pending)
    assert isinstance(fast, Allow)  # a clear password is checked in decide() itself
    assert fast.consumer is plain
    assert isinstance(unknown, Pending)
    assert slow.slow
    assert unknown.slow  # the decoy is as slow as the slow verifiers
    assert slow.run().consumer is hashed  # type: ignore[union-attr]
    cached = gateway.decide(RequestFacts("GET", "/x", None, (basic("h", "pw"),)))
    assert isinstance(cached, Allow)  # the success is remembered
    assert cached.consumer is hashed


def test_replace_consumers_is_atomic_and_validated() -> None:
    gateway = Gateway(
        consumers=[Consumer("alex", password="1"), Consumer("guest")],
        routes=[Route("/x", plugins=[BasicAuthPlugin(anonymous_consumer="guest")])],
    )
    facts = RequestFacts("GET", "/x", None, ())
    assert gateway.decide_now(facts).consumer.username == "guest"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="duplicate consumer"):
        gateway.replace_consumers([Consumer("a"), Consumer("a")])
    assert gateway.decide_now(facts).consumer.username == "guest"  # type: ignore[union-attr]
    gateway.replace_consumers([Consumer("alex", password="1")])
    assert gateway.decide_now(facts).body == b'{"message":"Invalid user authorization"}\n'  # type: ignore[union-attr]


def test_concurrent_decisions_during_swaps() -> None:
    gateway = Gateway(consumers=[Consumer("alex", password="1")], routes=[Route("/x", plugins=[BasicAuthPlugin()])])
    facts = RequestFacts("GET", "/x", None, (basic("alex", "1"),))
    errors: list[BaseException] = []

    def decide() -> None:
        try:
            for _ in range(2000):
                status = getattr(gateway.decide_now(facts), "status", 200)
                assert status in (200, 401)
        except BaseException as error:  # noqa: BLE001 - collected for the assertion below
            errors.append(error)

    threads = [threading.Thread(target=decide) for _ in range(4)]
    for thread in threads:
        thread.start()
    for i in range(200):
        gateway.replace_consumers([Consumer("alex", password="1" if i % 2 else "2")])
    for thread in threads:
        thread.join()
    assert errors == []
