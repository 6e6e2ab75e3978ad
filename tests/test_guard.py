"""``Gateway.guard``: the per-view protection the framework integrations build on."""

from __future__ import annotations

import pytest

from consumer_auth import (
    Allow,
    BasicAuthPlugin,
    ConfigError,
    Consumer,
    ConsumerRestrictionPlugin,
    Gateway,
    Pending,
    Reject,
    RequestFacts,
    Route,
)
from support import basic, cheap_argon2

ALEX = basic("alex", "123456")
JACK = basic("jack", "654321")


def gateway(profile: str = "classic") -> Gateway:
    return Gateway(
        consumers=[
            Consumer("alex", password="123456"),
            Consumer("jack", password="654321"),
            Consumer("guest"),
        ],
        routes=[Route("/json", plugins=[BasicAuthPlugin()])],
        profile=profile,
    )


def facts(*authorization: str, method: str = "GET") -> RequestFacts:
    return RequestFacts(method, "/anything", "example.com", authorization)


@pytest.mark.parametrize("profile", ["classic", "apisix-3"])
@pytest.mark.parametrize(
    "authorization",
    [(), ("Basic !!",), (basic("who", "x"),), (basic("alex", "x"),), (ALEX, ALEX)],
    ids=["missing", "invalid", "unknown", "wrong", "two-headers"],
)
def test_guard_answers_exactly_as_a_route(profile: str, authorization: tuple[str, ...]) -> None:
    built = gateway(profile)
    by_route = built.decide_now(RequestFacts("GET", "/json", None, authorization))
    by_guard = built.guard(BasicAuthPlugin()).decide_now(facts(*authorization))
    assert isinstance(by_route, Reject)
    assert by_guard == by_route


def test_guard_allows_a_consumer() -> None:
    decision = gateway().guard(BasicAuthPlugin()).decide_now(facts(ALEX))
    assert isinstance(decision, Allow)
    assert decision.consumer is not None
    assert decision.consumer.username == "alex"


def test_guard_restriction() -> None:
    guard = gateway().guard(BasicAuthPlugin(), ConsumerRestrictionPlugin(whitelist=("alex",)))
    assert isinstance(guard.decide_now(facts(ALEX)), Allow)
    rejected = guard.decide_now(facts(JACK))
    assert isinstance(rejected, Reject)
    assert (rejected.status, rejected.body) == (403, b'{"message":"The consumer_name is forbidden."}\n')


def test_guard_with_an_authenticated_consumer_only_restricts() -> None:
    built = gateway()
    jack = next(c for c in built.consumers if c.username == "jack")
    guard = built.guard(BasicAuthPlugin(), ConsumerRestrictionPlugin(whitelist=("alex",)))
    # No Authorization header at all: the consumer is not authenticated again.
    assert isinstance(guard.decide_now(facts(), jack), Reject)
    alex = next(c for c in built.consumers if c.username == "alex")
    allowed = guard.decide_now(facts(), alex)
    assert isinstance(allowed, Allow)
    assert allowed.consumer is alex
    assert allowed.identity_headers == ()


def test_guard_sees_consumers_replaced_at_run_time() -> None:
    built = gateway()
    guard = built.guard(BasicAuthPlugin())
    built.replace_consumers([Consumer("jack", password="654321")])
    assert isinstance(guard.decide_now(facts(JACK)), Allow)
    rejected = guard.decide_now(facts(ALEX))
    assert isinstance(rejected, Reject)
    assert rejected.body == b'{"message":"Invalid user key in authorization"}\n'


def test_guard_anonymous_consumer() -> None:
    built = gateway()
    decision = built.guard(BasicAuthPlugin(anonymous_consumer="guest")).decide_now(facts())
    assert isinstance(decision, Allow)
    assert decision.consumer is not None
    assert decision.consumer.username == "guest"
    with pytest.raises(ConfigError, match=r"^basic-auth\.anonymous_consumer: no consumer named 'nobody'"):
        built.guard(BasicAuthPlugin(anonymous_consumer="nobody"))


def test_guard_rejects_duplicate_plugins() -> None:
    with pytest.raises(ConfigError, match="basic-auth"):
        gateway().guard(BasicAuthPlugin(), BasicAuthPlugin())


def test_argon2_consumers_build_and_verify_off_the_caller() -> None:
    built = Gateway(
        consumers=[Consumer("alex", password_hash=cheap_argon2("123456"))],
        routes=[Route("/json", plugins=[BasicAuthPlugin()])],
    )
    pending = built.guard(BasicAuthPlugin()).decide(facts(ALEX))
    assert isinstance(pending, Pending)
    assert pending.slow
    assert isinstance(pending.run(), Allow)
    unknown = built.decide(RequestFacts("GET", "/json", None, (basic("who", "x"),)))
    assert isinstance(unknown, Pending)
    assert unknown.slow
    assert isinstance(unknown.run(), Reject)
