"""Consumer groups in the SQL store (SQLite and a real PostgreSQL): stored, checked, and followed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer_auth import BasicAuthPlugin, ConfigError, Gateway, Reject, RequestFacts, Route
from consumer_auth.store import SQLStore
from support import basic, within

PASSWORD = "pw-of-a-member"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLStore]:
    if request.param == "sqlite":
        opened = SQLStore(f"sqlite:///{tmp_path / 'consumers.db'}")
    else:
        opened = SQLStore(request.getfixturevalue("postgres").url)
    yield opened
    opened.close()


def member(login: str, group_id: str | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {"plugins": {"basic-auth": {"username": login, "password": PASSWORD}}}
    if group_id is not None:
        document["group_id"] = group_id
    return document


def deny(message: str) -> dict[str, Any]:
    return {"plugins": {"consumer-restriction": {"whitelist": ["nobody"], "rejected_msg": message}}}


def answer(gateway: Gateway, login: str) -> int | bytes:
    decision = gateway.decide_now(RequestFacts("GET", "/json", "localhost", (basic(login, PASSWORD),)))
    return decision.body if isinstance(decision, Reject) else 200


def test_groups_round_trip_and_reach_a_following_gateway(store: SQLStore) -> None:
    group, created = store.put_resource(
        "consumer_groups", "free", {"desc": "the free tier", **deny("free tier")}
    )
    assert created
    assert group.document == {"id": "free", "desc": "the free tier", **deny("free tier")}
    store.put_resources(
        [("consumers", "alex", member("alex", "free")), ("consumers", "jack", member("jack"))]
    )
    assert store.get_resource("consumer_groups", "free") == group
    assert [r.key for r in store.list_resources("consumer_groups")] == ["free"]
    assert store.get_resource("consumers", "alex").document["group_id"] == "free"  # type: ignore[union-attr]

    snapshot = store.load()
    assert [g.id for g in snapshot.consumer_groups] == ["free"]
    assert {c.username: c.group_id for c in snapshot.consumers} == {"alex": "free", "jack": None}

    gateway = Gateway(routes=[Route("/json", plugins=[BasicAuthPlugin()])])
    gateway.attach(store, poll_interval=0.05)
    try:
        assert answer(gateway, "alex") == b'{"message":"free tier"}\n'
        assert answer(gateway, "jack") == 200
        store.put_resource("consumer_groups", "free", deny("still free"))
        assert within(10, lambda: answer(gateway, "alex") == b'{"message":"still free"}\n')
        store.put_resource("consumers", "jack", member("jack", "free"))
        assert within(10, lambda: answer(gateway, "jack") == b'{"message":"still free"}\n')
        store.put_resource("consumer_groups", "free", {})
        assert within(10, lambda: answer(gateway, "alex") == 200)
    finally:
        gateway.close()


def test_a_group_in_use_cannot_be_deleted(store: SQLStore) -> None:
    store.put_resource("consumer_groups", "free", {})
    store.put_resources(
        [("consumers", "jack", member("jack")), ("consumers", "alex", member("alex", "free"))]
    )
    revision = store.revision()
    with pytest.raises(ConfigError) as caught:
        store.delete_resource("consumer_groups", "free")
    assert str(caught.value) == "can not delete this consumer group, consumer [alex] is still using it now"
    assert store.revision() == revision
    assert store.get_resource("consumer_groups", "free") is not None
    store.put_resource("consumers", "alex", member("alex"))  # out of the group
    assert store.delete_resource("consumer_groups", "free")
    assert store.get_resource("consumer_groups", "free") is None
    assert not store.delete_resource("consumer_groups", "free")


@pytest.mark.parametrize(
    ("kind", "key", "document", "message"),
    [
        pytest.param("consumers", "bob", member("bob", "gold"), "consumers/bob.group_id: no consumer group with id 'gold'", id="dangling-group-id"),
        pytest.param("consumers", "bob", member("bob", "a b"), "group_id: expected 1 to 64 letters", id="bad-group-id"),
        pytest.param("consumers", "bob", {**member("bob"), "group_id": 7}, "group_id: expected a string, got 7", id="group-id-not-a-string"),
        pytest.param("consumer_groups", "a b", {}, "id: expected 1-64 letters", id="bad-key"),
        pytest.param("consumer_groups", "free", {"id": "gold"}, "id: expected 'free' (as in the path), got 'gold'", id="id-differs-from-key"),
        pytest.param("consumer_groups", "free", {"name": "Free"}, "name: unknown key", id="unknown-key"),
        pytest.param("consumer_groups", "free", {"plugins": {"basic-auth": {"username": "g", "password": PASSWORD}}}, "plugins.basic-auth: a consumer group holds no credentials", id="credentials"),
        pytest.param("consumer_groups", "free", {"plugins": {"consumer-restriction": {}}}, "plugins.consumer-restriction.whitelist: one of", id="bad-plugin"),
    ],
)  # fmt: skip
def test_invalid_groups_and_group_ids_change_nothing(
    store: SQLStore, kind: str, key: str, document: dict[str, Any], message: str
) -> None:
    store.put_resource("consumer_groups", "other", {})
    revision = store.revision()
    with pytest.raises(ConfigError) as caught:
        store.put_resource(kind, key, document)
    assert str(caught.value).startswith(message)
    assert PASSWORD not in str(caught.value)
    assert store.revision() == revision
    assert store.get_resource(kind, key) is None


def test_a_database_written_before_groups_gains_them(tmp_path: Path) -> None:
    """Groups are rows of the same resources table: a database from before needs no migration."""
    url = f"sqlite:///{tmp_path / 'consumers.db'}"
    before = SQLStore(url)
    before.put_resource("consumers", "alex", member("alex"))
    before.close()
    after = SQLStore(url)
    try:
        assert after.load().consumer_groups == ()
        after.put_resources(
            [("consumer_groups", "free", deny("free")), ("consumers", "alex", member("alex", "free"))]
        )
        snapshot = after.load()
        assert [(c.username, c.group_id) for c in snapshot.consumers] == [("alex", "free")]
    finally:
        after.close()
