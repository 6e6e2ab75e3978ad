"""The plugin pipeline (SPEC §9): order by priority, and which level's plugin of a name is in force."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from consumer_auth import (
    Allow,
    BasicAuthPlugin,
    ConfigError,
    Consumer,
    ConsumerRestrictionPlugin,
    Gateway,
    Plugin,
    PluginRequest,
    Reject,
    RequestFacts,
    Route,
    Service,
    json_reject,
)
from consumer_auth.sansio.decision import encode_headers
from consumer_auth.sansio.pipeline import effective_plugins
from consumer_auth.sansio.plugin import QuickHeaders
from support import Deny, basic

ALEX = basic("alex", "123456")


def get(path: str, *authorization: str) -> RequestFacts:
    return RequestFacts("GET", path, "localhost", authorization, "127.0.0.1")


calls: list[str] = []


@dataclass(frozen=True)
class Recorder(Plugin):
    """Writes down each phase it runs in."""

    tag: str = ""

    def rewrite(self, request: PluginRequest) -> None:
        calls.append(f"rewrite {self.name}{self.tag}")

    def access(self, request: PluginRequest) -> None:
        who = request.consumer.username if request.consumer is not None else None
        calls.append(f"access {self.name}{self.tag} consumer={who}")

    def response(self, request: PluginRequest) -> None:
        calls.append(f"response {self.name}{self.tag}")


class Low(Recorder):
    name: ClassVar[str] = "low"
    priority: ClassVar[int] = 10


class Middle(Recorder):
    name: ClassVar[str] = "middle"
    priority: ClassVar[int] = 2500


class High(Recorder):
    name: ClassVar[str] = "high"
    priority: ClassVar[int] = 9000


def test_phases_run_in_order_and_plugins_by_priority_within_a_phase() -> None:
    calls.clear()
    gateway = Gateway(
        consumers=[Consumer("alex", password="123456")],
        routes=[Route("/p", plugins=[Low(), BasicAuthPlugin(), High(), Middle()])],
    )
    pipeline = gateway.compiled_routes[0].pipeline
    assert [p.name for p in pipeline.plugins] == ["high", "basic-auth", "middle", "low"]
    assert isinstance(gateway.decide_now(get("/p", ALEX)), Allow)
    assert calls == [
        "rewrite high",
        "rewrite middle",
        "rewrite low",
        "access high consumer=alex",
        "access middle consumer=alex",
        "access low consumer=alex",
        "response high",
        "response middle",
        "response low",
    ]


def test_a_rejection_stops_the_pipeline() -> None:
    calls.clear()
    gateway = Gateway(routes=[Route("/p", plugins=[Low(), BasicAuthPlugin(), High()])])
    decision = gateway.decide_now(get("/p"))
    assert isinstance(decision, Reject)
    assert decision.body == b'{"message":"Missing authorization in request"}\n'
    assert calls == ["rewrite high", "rewrite low"]  # rewrite runs before authentication, access never


def test_consumer_restriction_runs_after_basic_auth_by_priority() -> None:
    plugins = effective_plugins([ConsumerRestrictionPlugin(whitelist=("alex",)), BasicAuthPlugin()])
    gateway = Gateway(routes=[Route("/p", plugins=list(plugins.values()))])
    assert [p.name for p in gateway.compiled_routes[0].pipeline.plugins] == [
        "basic-auth",
        "consumer-restriction",
    ]


def test_route_plugin_replaces_the_service_plugin_of_the_same_name() -> None:
    gateway = Gateway(
        consumers=[Consumer("alex", password="123456"), Consumer("bob", password="654321")],
        services=[
            Service(
                "svc",
                plugins=[
                    BasicAuthPlugin(),
                    ConsumerRestrictionPlugin(whitelist=("bob",)),
                    Deny("from service"),
                ],
            )
        ],
        routes=[
            Route("/own", service_id="svc", plugins=[ConsumerRestrictionPlugin(whitelist=("alex",))]),
            Route("/inherited", service_id="svc"),
        ],
    )
    own = gateway.compiled_routes[0]
    assert own.plugins["consumer-restriction"] == ConsumerRestrictionPlugin(whitelist=("alex",))
    assert own.plugins["basic-auth"] == BasicAuthPlugin()  # still the service's: other names stay
    # The route's whitelist (alex) is in force, not the service's (bob); the service's deny still runs.
    decision = gateway.decide_now(get("/own", ALEX))
    assert isinstance(decision, Reject)
    assert decision.body == b'{"message":"from service"}\n'
    bob = gateway.decide_now(get("/own", basic("bob", "654321")))
    assert isinstance(bob, Reject)
    assert bob.body == b'{"message":"The consumer_name is forbidden."}\n'
    inherited = gateway.decide_now(get("/inherited", ALEX))
    assert isinstance(inherited, Reject)
    assert inherited.body == b'{"message":"The consumer_name is forbidden."}\n'


def test_consumer_plugin_replaces_the_route_plugin_of_the_same_name() -> None:
    gateway = Gateway(
        consumers=[
            Consumer("alex", password="123456", plugins=[Deny("alex's own")]),
            Consumer("bob", password="654321"),
            Consumer("carol", password="carol", plugins=[ConsumerRestrictionPlugin(whitelist=("carol",))]),
        ],
        routes=[
            Route(
                "/p",
                plugins=[
                    BasicAuthPlugin(),
                    Deny("the route's"),
                    ConsumerRestrictionPlugin(blacklist=("carol",)),
                ],
            )
        ],
    )
    alex = gateway.decide_now(get("/p", ALEX))
    assert isinstance(alex, Reject)
    assert alex.body == b'{"message":"alex\'s own"}\n'
    bob = gateway.decide_now(get("/p", basic("bob", "654321")))
    assert isinstance(bob, Reject)
    assert bob.body == b'{"message":"the route\'s"}\n'
    # carol's consumer-restriction (a whitelist of herself) replaces the route's blacklist of her; the
    # route's deny still applies to her.
    carol = gateway.decide_now(get("/p", basic("carol", "carol")))
    assert isinstance(carol, Reject)
    assert carol.body == b'{"message":"the route\'s"}\n'


def test_a_consumer_plugin_joins_the_pipeline_at_its_priority() -> None:
    calls.clear()
    gateway = Gateway(
        consumers=[Consumer("alex", password="123456", plugins=[Middle(tag="@alex")])],
        routes=[Route("/p", plugins=[BasicAuthPlugin(), High(), Low(), Middle(tag="@route")])],
    )
    assert isinstance(gateway.decide_now(get("/p", ALEX)), Allow)
    assert calls == [
        "rewrite high",
        "rewrite middle@route",  # before authentication the consumer is not known yet
        "rewrite low",
        "access high consumer=alex",
        "access middle@alex consumer=alex",
        "access low consumer=alex",
        "response high",
        "response middle@alex",
        "response low",
    ]


def test_precedence_is_consumer_then_group_then_route_then_service() -> None:
    service, route, group, consumer = (Deny(level) for level in ("service", "route", "group", "consumer"))
    assert effective_plugins([service], [route], [group], [consumer])["deny"] is consumer
    assert effective_plugins([service], [route], [group], [])["deny"] is group
    assert effective_plugins([service], [route], [], [])["deny"] is route
    assert effective_plugins([service], [], [], [])["deny"] is service


@pytest.mark.parametrize(
    ("plugins", "message"),
    [
        pytest.param([BasicAuthPlugin()], "plugins[0]: plugin 'basic-auth' authenticates", id="auth"),
        pytest.param([Deny(), Deny()], "plugins[1]: plugin 'deny' given twice", id="twice"),
        pytest.param(["deny"], "plugins[0]: expected a plugin object, got 'deny'", id="not-a-plugin"),
    ],
)
def test_consumer_plugins_are_checked(plugins: list[object], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        Consumer("alex", password="123456", plugins=plugins)  # type: ignore[arg-type]


def test_the_group_level_sits_between_route_and_consumer() -> None:
    """The hook consumer groups use: a group's plugin replaces the route's, the consumer's replaces both."""
    gateway = Gateway(routes=[Route("/p", plugins=[BasicAuthPlugin(), Deny("the route's")])])
    pipeline = gateway.compiled_routes[0].pipeline
    plain, own = (
        Consumer("bob", password="654321"),
        Consumer("alex", password="123456", plugins=[Deny("alex's")]),
    )

    def denial(pipeline_for: Consumer, group: tuple[Plugin, ...]) -> bytes:
        access = pipeline.for_consumer(pipeline_for, group).access
        request = PluginRequest(get("/p"), None, gateway.environment, "p", None, False)  # type: ignore[arg-type]
        request.consumer = pipeline_for
        outcomes = [step(request) for step in access]
        return next(o.body for o in outcomes if isinstance(o, Reject))

    assert denial(plain, ()) == b'{"message":"the route\'s"}\n'
    assert denial(plain, (Deny("the group's"),)) == b'{"message":"the group\'s"}\n'
    assert denial(own, (Deny("the group's"),)) == b'{"message":"alex\'s"}\n'


NO = json_reject(403, "message", "no")


class Tagger(Plugin):
    """Adds ``X-Tag`` in its access phase, rejects ``/no``; its quick form says which form ran."""

    name: ClassVar[str] = "tagger"
    priority: ClassVar[int] = 1500

    def __init__(self, quick: bool = True) -> None:
        self.quick = quick
        self.ran: list[str] = []

    def access(self, request: PluginRequest) -> Reject | None:
        self.ran.append("access")
        if request.facts.path == "/no":
            return NO
        request.response_headers.append(("X-Tag", f"{request.route_id}/{request.consumer.username}"))  # type: ignore[union-attr]
        return None

    def quick_access(self) -> Callable[..., Reject | QuickHeaders | None] | None:
        return self._quick if self.quick else None

    def _quick(self, facts: RequestFacts, consumer: Consumer, route: Any) -> Reject | QuickHeaders | None:
        self.ran.append("quick")
        if facts.path == "/no":
            return NO
        headers = (("X-Tag", f"{route.label}/{consumer.username}"),)
        return headers, encode_headers(headers)


@pytest.mark.parametrize("quick", [True, False])
def test_an_access_plugin_s_quick_form_answers_as_its_phase(quick: bool) -> None:
    tagger = Tagger(quick)
    gateway = Gateway(
        consumers=[Consumer("alex", password="123456"), Consumer("bob", password="1", plugins=[Low()])],
        routes=[Route("/*", id="r", plugins=[BasicAuthPlugin(), tagger])],
    )
    allowed = gateway.decide_now(get("/yes", ALEX))
    assert isinstance(allowed, Allow)
    assert allowed.response_headers == (("X-Tag", "r/alex"),)
    assert allowed == Allow(
        allowed.route,
        allowed.consumer,
        allowed.credential,
        (("x-consumer-username", "alex"),),
        response_headers=(("X-Tag", "r/alex"),),
    )
    assert gateway.decide_now(get("/no", ALEX)) == NO
    assert tagger.ran == (["quick"] * 2 if quick else ["access"] * 2)
    # A consumer that brings plugins runs the phases.
    tagger.ran.clear()
    calls.clear()
    bobs = gateway.decide_now(get("/yes", basic("bob", "1")))
    assert isinstance(bobs, Allow)
    assert bobs.response_headers == (("X-Tag", "r/bob"),)
    assert tagger.ran == ["access"]
