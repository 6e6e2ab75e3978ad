"""Consumer groups in Python (SPEC §9, §10): the group level of the pipeline, its checks and its changes.

The answers in every mode are rows of the conformance table (``groups-*``); this module covers the
Python API, the decision log path (no shortcut), run-time replacement and the checks.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from consumer_auth import (
    Allow,
    BasicAuthPlugin,
    ConfigError,
    Consumer,
    ConsumerGroup,
    ConsumerRestrictionPlugin,
    Gateway,
    Reject,
    RequestFacts,
    Route,
    Service,
)
from support import Deny, basic


def get(path: str, who: str | None = None, method: str = "GET") -> RequestFacts:
    authorization = (basic(who, who),) if who is not None else ()
    return RequestFacts(method, path, "localhost", authorization, "127.0.0.1")


def body(decision: object) -> bytes | None:
    return decision.body if isinstance(decision, Reject) else None


def member(name: str, group_id: str | None = None, **options: object) -> Consumer:
    return Consumer(name, password=name, group_id=group_id, **options)  # type: ignore[arg-type]


def precedence_gateway() -> Gateway:
    return Gateway(
        consumer_groups=[
            ConsumerGroup(
                "free", desc="the free tier", labels={"tier": "free"}, plugins=[Deny("the group's")]
            ),
            ConsumerGroup("empty"),
        ],
        consumers=[
            member("alex", "free"),
            member("bob"),
            member("carol", "free", plugins=[Deny("carol's")]),
            member("erin", "empty"),
        ],
        services=[Service("svc", path_prefix="/svc", plugins=[Deny("the service's")])],
        routes=[
            Route("/x", service_id="svc", plugins=[BasicAuthPlugin()]),
            Route("/route", plugins=[BasicAuthPlugin(), Deny("the route's")]),
            Route("/plain", plugins=[BasicAuthPlugin()]),
        ],
    )


PRECEDENCE = [
    pytest.param("alex", "/svc/x", b'{"message":"the group\'s"}\n', id="group-over-service"),
    pytest.param("alex", "/route", b'{"message":"the group\'s"}\n', id="group-over-route"),
    pytest.param("alex", "/plain", b'{"message":"the group\'s"}\n', id="group-on-a-route-without-it"),
    pytest.param("carol", "/route", b'{"message":"carol\'s"}\n', id="consumer-over-group"),
    pytest.param("carol", "/svc/x", b'{"message":"carol\'s"}\n', id="consumer-over-group-over-service"),
    pytest.param("bob", "/route", b'{"message":"the route\'s"}\n', id="no-group-route"),
    pytest.param("bob", "/svc/x", b'{"message":"the service\'s"}\n', id="no-group-service"),
    pytest.param("bob", "/plain", None, id="no-group-passes"),
    pytest.param("erin", "/route", b'{"message":"the route\'s"}\n', id="group-without-plugins"),
    pytest.param("erin", "/plain", None, id="group-without-plugins-passes"),
]


@pytest.mark.parametrize("logged", [False, True], ids=["shortcut", "logged"])
@pytest.mark.parametrize(("who", "path", "expected"), PRECEDENCE)
def test_precedence_consumer_then_group_then_route_then_service(
    caplog: pytest.LogCaptureFixture, logged: bool, who: str, path: str, expected: bytes | None
) -> None:
    # With the decision log on, the gateway runs the whole pipeline; off, a basic-auth-only route
    # takes its shortcut. Both must see the group.
    caplog.set_level(logging.INFO if logged else logging.WARNING, logger="consumer_auth.auth")
    decision = precedence_gateway().decide_now(get(path, who))
    assert body(decision) == expected
    if expected is None:
        assert isinstance(decision, Allow)
        assert decision.consumer is not None
        assert decision.consumer.username == who


def test_a_group_plugin_replaces_the_route_plugin_wholesale() -> None:
    """The group's consumer-restriction (a whitelist) replaces the route's (a blacklist of the same
    consumer) as a whole: the lists are not merged."""
    gateway = Gateway(
        consumer_groups=[ConsumerGroup("vip", plugins=[ConsumerRestrictionPlugin(whitelist=("dave",))])],
        consumers=[member("dave", "vip"), member("bob")],
        routes=[
            Route("/p", plugins=[BasicAuthPlugin(), ConsumerRestrictionPlugin(blacklist=("dave", "bob"))])
        ],
    )
    assert isinstance(gateway.decide_now(get("/p", "dave")), Allow)
    assert body(gateway.decide_now(get("/p", "bob"))) == b'{"message":"The consumer_name is forbidden."}\n'


def test_an_anonymous_consumer_takes_its_group_plugins() -> None:
    gateway = Gateway(
        consumer_groups=[ConsumerGroup("guests", plugins=[Deny("guests' group")])],
        consumers=[member("alex"), Consumer("guest", group_id="guests")],
        routes=[Route("/p", plugins=[BasicAuthPlugin(anonymous_consumer="guest")])],
    )
    assert body(gateway.decide_now(get("/p"))) == b'{"message":"guests\' group"}\n'
    assert isinstance(gateway.decide_now(get("/p", "alex")), Allow)


def restriction_gateway(**restriction: object) -> Gateway:
    return Gateway(
        consumer_groups=[ConsumerGroup("gold"), ConsumerGroup("free")],
        consumers=[member("alex", "gold"), member("jack", "free"), member("bob")],
        routes=[
            Route(
                "/p",
                plugins=[
                    BasicAuthPlugin(),
                    ConsumerRestrictionPlugin(type="consumer_group_id", **restriction),  # type: ignore[arg-type]
                ],
            )
        ],
    )


FORBIDDEN = b'{"message":"The consumer_group_id is forbidden."}\n'
NO_GROUP = b'{"message":"The request is rejected, please check the consumer_group_id for this request"}\n'


@pytest.mark.parametrize(
    ("restriction", "method", "expected"),
    [
        pytest.param(
            {"whitelist": ["gold"]}, "GET", {"alex": None, "jack": FORBIDDEN, "bob": NO_GROUP}, id="whitelist"
        ),
        pytest.param(
            {"blacklist": ["gold"]}, "GET", {"alex": FORBIDDEN, "jack": None, "bob": NO_GROUP}, id="blacklist"
        ),
        pytest.param(
            {"whitelist": ["gold"], "rejected_code": 401, "rejected_msg": "Gold only"},
            "GET",
            {"jack": b'{"message":"Gold only"}\n'},
            id="own-message",
        ),
        pytest.param(
            {"allowed_by_methods": [{"user": "free", "methods": ["GET"]}]},
            "POST",
            {"alex": None, "jack": FORBIDDEN, "bob": NO_GROUP},
            id="methods-by-group",
        ),
        pytest.param(
            {"allowed_by_methods": [{"user": "free", "methods": ["GET"]}]},
            "GET",
            {"alex": None, "jack": None},
            id="methods-by-group-allowed",
        ),
    ],
)
def test_restriction_by_group(
    restriction: dict[str, object], method: str, expected: dict[str, bytes | None]
) -> None:
    gateway = restriction_gateway(**restriction)
    for who, answer in expected.items():
        decision = gateway.decide_now(get("/p", who, method))
        assert body(decision) == answer, who
        if answer is not None:
            assert isinstance(decision, Reject)
            assert decision.status == (401 if answer is NO_GROUP else restriction.get("rejected_code", 403))


def test_restriction_by_group_names_its_default_message() -> None:
    assert ConsumerRestrictionPlugin(whitelist=("a",)).rejected_msg == "The consumer_name is forbidden."
    by_group = ConsumerRestrictionPlugin(whitelist=("a",), type="consumer_group_id")
    assert by_group.rejected_msg == "The consumer_group_id is forbidden."


def test_a_dangling_group_id_is_an_error_in_python() -> None:
    with pytest.raises(ConfigError) as caught:
        Gateway(consumers=[member("alex"), member("bob", "gold")], consumer_groups=[ConsumerGroup("free")])
    assert str(caught.value) == "consumers[1].group_id: no consumer group with id 'gold'"


def test_a_duplicate_group_id_is_an_error_in_python() -> None:
    with pytest.raises(ConfigError) as caught:
        Gateway(consumer_groups=[ConsumerGroup("free"), ConsumerGroup("free")])
    assert str(caught.value) == "consumer_groups[1].id: duplicate consumer group 'free'"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        pytest.param(lambda: ConsumerGroup("a b"), "id: expected 1 to 64 letters", id="bad-id"),
        pytest.param(lambda: ConsumerGroup(""), "id: expected a non-empty string", id="empty-id"),
        pytest.param(lambda: ConsumerGroup("g", plugins=[BasicAuthPlugin()]), "plugins[0]: plugin 'basic-auth' authenticates: a consumer group's plugins run after authentication", id="authenticating-plugin"),
        pytest.param(lambda: ConsumerGroup("g", plugins=[Deny(), Deny()]), "plugins[1]: plugin 'deny' given twice", id="twice"),
        pytest.param(lambda: ConsumerGroup("g", labels={"a": 1}), "labels.a: expected a string", id="bad-label"),  # type: ignore[dict-item]
        pytest.param(lambda: Consumer("alex", group_id="a/b"), "group_id: expected 1 to 64 letters", id="bad-group-id"),
        pytest.param(lambda: Gateway(consumer_groups=["free"]), "consumer_groups[0]: expected a ConsumerGroup, got 'free'", id="not-a-group"),  # type: ignore[list-item]
        pytest.param(lambda: Gateway(consumer_groups=[ConsumerGroup("g", plugins=[_Shaped()])]), "consumer_groups[0].plugins[0]: expected a plugin object", id="not-a-plugin"),
    ],
)  # fmt: skip
def test_groups_are_checked(build: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build()  # type: ignore[operator]
    assert str(caught.value).startswith(message)


class _Shaped:
    """Looks like a plugin to ``ConsumerGroup`` (a name, phases) but is not a :class:`Plugin`."""

    name = "shaped"

    def phases(self) -> tuple[str, ...]:
        return ("access",)


def test_replacing_the_groups_changes_the_plugins_of_the_same_consumers() -> None:
    gateway = Gateway(
        consumer_groups=[ConsumerGroup("free", plugins=[Deny("first")])],
        consumers=[member("alex", "free")],
        routes=[Route("/p", plugins=[BasicAuthPlugin()])],
    )
    consumers = gateway.consumers
    assert body(gateway.decide_now(get("/p", "alex"))) == b'{"message":"first"}\n'
    gateway.replace(consumer_groups=[ConsumerGroup("free", plugins=[Deny("second")])])
    assert gateway.consumers == consumers  # the same consumer objects, in a new group
    assert body(gateway.decide_now(get("/p", "alex"))) == b'{"message":"second"}\n'
    gateway.replace(consumer_groups=[ConsumerGroup("free")])
    assert isinstance(gateway.decide_now(get("/p", "alex")), Allow)
    assert [group.id for group in gateway.consumer_groups] == ["free"]


def test_replacing_consumers_keeps_the_groups_and_refuses_a_dangling_id() -> None:
    gateway = Gateway(
        consumer_groups=[ConsumerGroup("free", plugins=[Deny("free")])],
        consumers=[member("alex", "free")],
        routes=[Route("/p", plugins=[BasicAuthPlugin()])],
    )
    gateway.replace_consumers([member("alex"), member("jack", "free")])
    assert isinstance(gateway.decide_now(get("/p", "alex")), Allow)
    assert body(gateway.decide_now(get("/p", "jack"))) == b'{"message":"free"}\n'
    with pytest.raises(ConfigError, match=r"^consumers\[0\]\.group_id: no consumer group with id 'gold'"):
        gateway.replace_consumers([member("alex", "gold")])
    with pytest.raises(ConfigError, match=r"^consumers\[1\]\.group_id: no consumer group with id 'free'"):
        gateway.replace(consumer_groups=[])  # jack's group would be gone
    assert body(gateway.decide_now(get("/p", "jack"))) == b'{"message":"free"}\n'  # all still in force


def test_a_guard_behind_a_gateway_applies_the_group_plugins() -> None:
    gateway = Gateway(
        consumer_groups=[ConsumerGroup("free", plugins=[ConsumerRestrictionPlugin(blacklist=("alex",))])],
        consumers=[member("alex", "free")],
    )
    guard = gateway.guard(ConsumerRestrictionPlugin(whitelist=("alex",)))
    alex = gateway.consumers[0]
    # alex, already authenticated by a gateway route: her group's restriction replaces the guard's
    assert body(guard.decide_now(get("/view"), alex)) == b'{"message":"The consumer_name is forbidden."}\n'


def test_groups_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "consumer_groups": [
                    {
                        "id": "free",
                        "desc": "the free tier",
                        "labels": {"tier": "free"},
                        "plugins": {"consumer-restriction": {"blacklist": ["alex"], "rejected_msg": "free"}},
                    }
                ],
                "consumers": [
                    {
                        "username": "alex",
                        "group_id": "free",
                        "plugins": {"basic-auth": {"username": "alex", "password": "alex"}},
                    }
                ],
                "routes": [{"uri": "/p", "plugins": {"basic-auth": {}}}],
            }
        )
    )
    gateway = Gateway.from_file(path)
    (group,) = gateway.consumer_groups
    assert (group.id, group.desc, dict(group.labels)) == ("free", "the free tier", {"tier": "free"})
    assert [p.name for p in group.plugins] == ["consumer-restriction"]
    assert gateway.consumers[0].group_id == "free"
    assert body(gateway.decide_now(get("/p", "alex"))) == b'{"message":"free"}\n'


def test_groups_in_a_configuration_next_to_a_store_are_refused(tmp_path: Path) -> None:
    store = tmp_path / "consumers.yaml"
    store.write_text(yaml.safe_dump({"consumers": [{"username": "alex"}]}))
    routes = {"consumer_groups": [{"id": "free"}], "routes": [{"uri": "/p", "plugins": {"basic-auth": {}}}]}
    from consumer_auth.config import parse_config

    with pytest.raises(ConfigError, match="^consumer_groups: the consumer groups come from the store"):
        Gateway.from_config(parse_config(routes), store=str(store))


def test_repr_names_the_group() -> None:
    assert repr(member("alex", "free")) == "Consumer('alex', credentials=1, group_id='free')"
    assert repr(member("bob")) == "Consumer('bob', credentials=1)"
    assert repr(ConsumerGroup("free", plugins=[Deny()])) == "ConsumerGroup('free', plugins=['deny'])"


def test_the_precedence_example_of_the_plugins_page(tmp_path: Path) -> None:
    """docs/plugins.md shows a configuration and a table of answers: they must agree."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text()
    block = page.split("For example, with this configuration:\n\n```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "example.yaml"
    path.write_text(block)
    gateway = Gateway.from_file(path)

    def answer(login: str, password: str) -> bytes | None:
        facts = RequestFacts("GET", "/reports", "localhost", (basic(login, password),), "127.0.0.1")
        return body(gateway.decide_now(facts))

    assert answer("alex", "123456") is None
    assert answer("carol", "654321") is None
    assert answer("bob", "s3cret") == b'{"message":"The consumer_name is forbidden."}\n'
    assert "| `bob` (no group) | the route's (blacklist) | 403 `The consumer_name is forbidden.` |" in page
