"""SPEC §6: one schema from a mapping or a file; every mistake names its exact place, never a secret."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from configs import GUIDE
from consumer_auth import ConfigError, Gateway, hash_password
from consumer_auth.sansio.decision import RequestFacts
from support import basic

SECRET = "s3cr3t-Pa55"


def guide(**changes: Any) -> dict[str, Any]:
    document = copy.deepcopy(GUIDE)
    document["consumers"][0]["plugins"]["basic-auth"]["password"] = SECRET
    document.update(changes)
    return document


def with_route(**route: Any) -> dict[str, Any]:
    document = guide()
    document["routes"][0].update(route)
    return document


def with_auth(**config: Any) -> dict[str, Any]:
    document = guide()
    document["routes"][0]["plugins"]["basic-auth"].update(config)
    return document


def with_credential(**credential: Any) -> dict[str, Any]:
    document = guide()
    document["consumers"][0]["plugins"]["basic-auth"] = credential
    return document


def plus_consumer(consumer: dict[str, Any]) -> dict[str, Any]:
    document = guide()
    document["consumers"].append(consumer)
    return document


# fmt: off
MISTAKES = [
    pytest.param(with_auth(hide_credentials="yes"), "routes[0].plugins.basic-auth.hide_credentials: expected a boolean, got 'yes'", id="wrong-type"),
    pytest.param(with_auth(realm='a"b'), "routes[0].plugins.basic-auth.realm: expected 1-128 printable ASCII", id="bad-realm"),
    pytest.param(with_auth(realm="x" * 129), "routes[0].plugins.basic-auth.realm: expected 1-128", id="long-realm"),
    pytest.param(with_auth(hide=True), "routes[0].plugins.basic-auth.hide: unknown key", id="unknown-plugin-key"),
    pytest.param(guide(extra=1), "extra: unknown key", id="unknown-top-key"),
    pytest.param(with_route(url="/x"), "routes[0].url: unknown key", id="unknown-route-key"),
    pytest.param(with_route(plugins={"key-auth": {}}), "routes[0].plugins.key-auth: unknown plugin", id="unknown-plugin"),
    pytest.param(plus_consumer({"username": "bob", "plugins": {"basic-auth": {"username": "alex", "password": "other"}}}), "consumers[1]: duplicate basic-auth username 'alex' (also in consumers[0])", id="duplicate-credential-username"),
    pytest.param(plus_consumer({"username": "alex"}), "consumers[1].username: duplicate consumer 'alex'", id="duplicate-consumer"),
    pytest.param(with_credential(username="alex", password=""), "consumers[0].plugins.basic-auth.password: expected a non-empty string", id="empty-password"),
    pytest.param(with_credential(username="alex"), "consumers[0].plugins.basic-auth.password: exactly one of 'password' and 'password_hash' is required", id="no-password"),
    pytest.param(with_credential(username="alex", password=SECRET, password_hash="$argon2id$x"), "consumers[0].plugins.basic-auth.password: exactly one of", id="password-and-hash"),
    pytest.param(with_credential(username="alex", password=123456), "consumers[0].plugins.basic-auth.password: expected a string, got int", id="password-not-a-string"),
    pytest.param(with_credential(username="alex", password_hash="$argon2id$v=19$m=65536,t=3,p=4$" + SECRET), "consumers[0].plugins.basic-auth.password_hash: not a valid argon2 hash", id="malformed-hash"),
    pytest.param(with_credential(username="alex", password_hash=SECRET), "consumers[0].plugins.basic-auth.password_hash: unsupported hash format", id="unknown-hash-format"),
    pytest.param(with_route(service_id="nope"), "routes[0].service_id: no service with id 'nope'", id="dangling-service-id"),
    pytest.param(with_auth(anonymous_consumer="guest"), "routes[0].plugins.basic-auth.anonymous_consumer: no consumer named 'guest'", id="dangling-anonymous-consumer"),
    pytest.param(with_route(methods=["get"]), "routes[0].methods[0]: expected an HTTP method in capitals, got 'get'", id="bad-method"),
    pytest.param(with_route(uri="json"), "routes[0].uri: expected a path starting with '/'", id="relative-uri"),
    pytest.param(with_route(uris=["/a"]), "routes[0].uri: exactly one of 'uri' and 'uris' is required", id="uri-and-uris"),
    pytest.param(with_route(priority="high"), "routes[0].priority: expected an integer, got 'high'", id="bad-priority"),
    pytest.param(with_route(hosts=["exa mple.com"]), "routes[0].hosts[0]: expected a host name", id="bad-host"),
    pytest.param(guide(profile="apisix-2"), "profile: expected one of 'classic', 'apisix-3', got 'apisix-2'", id="bad-profile"),
    pytest.param(guide(unmatched="allow"), "unmatched: expected one of 'reject', 'pass'", id="bad-unmatched"),
    pytest.param(guide(path_matching={"case_insensitive": "yes"}), "path_matching.case_insensitive: expected a boolean, got 'yes'", id="bad-case-insensitive"),
    pytest.param(guide(path_matching={"fold": True}), "path_matching.fold: unknown key", id="unknown-path-matching-key"),
    pytest.param(guide(path_matching=["case_insensitive"]), "path_matching: expected a mapping", id="path-matching-not-a-mapping"),
    pytest.param(guide(routes={"uri": "/x"}), "routes: expected a list", id="routes-not-a-list"),
    pytest.param(with_route(upstream="ftp://x"), "routes[0].upstream: expected an http or https URL", id="bad-upstream-url"),
    pytest.param(with_route(upstream={"nodes": {"127.0.0.1": 1}}), "routes[0].upstream.nodes.127.0.0.1: expected 'host:port'", id="bad-upstream-node"),
    pytest.param(with_route(upstream={"nodes": {"127.0.0.1:80": 1}, "pass_host": "rewrite"}), "routes[0].upstream.upstream_host: required when pass_host is 'rewrite'", id="rewrite-without-host"),
    pytest.param(with_route(upstream={"nodes": {"127.0.0.1:80": 1}, "timeout": {"read": -1}}), "routes[0].upstream.timeout.read: expected a positive number", id="bad-timeout"),
    pytest.param(with_route(plugins={"consumer-restriction": {"rejected_code": 403}}), "routes[0].plugins.consumer-restriction.whitelist: one of", id="restriction-without-list"),
    pytest.param(with_route(plugins={"consumer-restriction": {"whitelist": []}}), "routes[0].plugins.consumer-restriction.whitelist: expected a non-empty list", id="restriction-empty-list"),
    pytest.param(with_route(plugins={"consumer-restriction": {"allowed_by_methods": [{"user": "a", "methods": ["FETCH"]}]}}), "routes[0].plugins.consumer-restriction.allowed_by_methods[0].methods[0]: expected one of", id="restriction-bad-method"),
    pytest.param(guide(services=[{"id": "a"}, {"id": "a"}]), "services[1].id: duplicate service id 'a'", id="duplicate-service"),
    pytest.param(guide(services=[{"path_prefix": "/v1"}]), "services[0].id: required (or 'name')", id="service-without-id"),
    pytest.param(guide(consumers=[{"username": "al ex"}]), "consumers[0].username: expected letters, digits", id="bad-consumer-name"),
    pytest.param(guide(consumers=[{"username": "a", "credentials": [{"id": "c1", "plugins": {}}]}]), "consumers[0].credentials[0].plugins: expected a 'basic-auth' credential", id="credential-without-plugin"),
    pytest.param(with_credential(username="alex:" + SECRET, password=SECRET), "consumers[0].plugins.basic-auth.username: must not contain ':' (RFC 7617", id="colon-in-credential-username"),
    pytest.param(guide(consumers=[{"username": "a", "credentials": [{"id": "c1", "plugins": {"basic-auth": {"username": "a:b", "password": SECRET}}}]}]), "consumers[0].credentials[0].plugins.basic-auth.username: must not contain ':'", id="colon-in-second-credential"),
    pytest.param(guide(consumers=[{"username": "a", "plugins": {"basic-auth": "a:" + SECRET}}]), "consumers[0].plugins.basic-auth: expected a mapping, got str", id="secret-as-a-wrong-shape"),
    pytest.param(guide(consumers=[{"username": "a", "plugins": {"basic-auth": ["a", SECRET]}}]), "consumers[0].plugins.basic-auth: expected a mapping, got list", id="secret-in-a-list"),
    pytest.param(guide(consumers=[{"username": "a", "plugins": "a:" + SECRET}]), "consumers[0].plugins: expected a mapping, got str", id="secret-as-plugins"),
    pytest.param(guide(consumers=["a:" + SECRET]), "consumers[0]: expected a mapping, got str", id="secret-as-a-consumer"),
    pytest.param(guide(consumers="a:" + SECRET), "consumers: expected a list, got str", id="secret-as-consumers"),
    pytest.param(guide(consumers=[{"username": "a", "credentials": ["a:" + SECRET]}]), "consumers[0].credentials[0]: expected a mapping, got str", id="secret-as-a-credential"),
    # consumer groups (SPEC §10)
    pytest.param(plus_consumer({"username": "bob", "group_id": "gold"}), "consumers[1].group_id: no consumer group with id 'gold'", id="dangling-group-id"),
    pytest.param(plus_consumer({"username": "bob", "group_id": "gold"}) | {"consumer_groups": [{"id": "free"}]}, "consumers[1].group_id: no consumer group with id 'gold'", id="dangling-group-id-among-groups"),
    pytest.param(guide(consumer_groups=[{"id": "free"}, {"id": "gold"}, {"id": "free"}]), "consumer_groups[2].id: duplicate consumer group 'free'", id="duplicate-group-id"),
    pytest.param(guide(consumer_groups=[{"desc": "no id"}]), "consumer_groups[0].id: required", id="group-without-id"),
    pytest.param(guide(consumer_groups=[{"id": "a b"}]), "consumer_groups[0].id: expected 1 to 64 letters, digits", id="bad-group-id"),
    pytest.param(guide(consumer_groups=[{"id": "x" * 65}]), "consumer_groups[0].id: expected 1 to 64", id="long-group-id"),
    pytest.param(guide(consumer_groups=[{"id": "free", "name": "Free"}]), "consumer_groups[0].name: unknown key", id="unknown-group-key"),
    pytest.param(guide(consumer_groups=[{"id": "free", "labels": {"tier": 1}}]), "consumer_groups[0].labels.tier: expected a string", id="bad-group-label"),
    pytest.param(guide(consumer_groups=[{"id": "free", "plugins": {"basic-auth": {"username": "g", "password": SECRET}}}]), "consumer_groups[0].plugins.basic-auth: a consumer group holds no credentials", id="group-with-credentials"),
    pytest.param(guide(consumer_groups=[{"id": "free", "plugins": {"key-auth": {}}}]), "consumer_groups[0].plugins.key-auth: unknown plugin", id="group-unknown-plugin"),
    pytest.param(guide(consumer_groups=[{"id": "free", "plugins": {"consumer-restriction": {"whitelist": []}}}]), "consumer_groups[0].plugins.consumer-restriction.whitelist: expected a non-empty list", id="group-bad-plugin"),
    pytest.param(guide(consumer_groups={"id": "free"}), "consumer_groups: expected a list", id="groups-not-a-list"),
    pytest.param(plus_consumer({"username": "bob", "group_id": ["free"]}) | {"consumer_groups": [{"id": "free"}]}, "consumers[1].group_id: expected a string, got ['free']", id="group-id-not-a-string"),
    pytest.param(with_route(plugins={"consumer-restriction": {"type": "consumer_group", "whitelist": ["a"]}}), "routes[0].plugins.consumer-restriction.type: expected one of 'consumer_name', 'consumer_group_id'", id="restriction-bad-type"),
    pytest.param(with_route(plugins={"consumer-restriction": {"whitelist": ["a"], "rejected_msg": None}}), "routes[0].plugins.consumer-restriction.rejected_msg: expected a string", id="restriction-null-message"),
]
# fmt: on


@pytest.mark.parametrize(("document", "message"), MISTAKES)
def test_mistake_names_its_place(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Gateway.from_dict(document)
    assert str(caught.value).startswith(message)
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)
    assert caught.value.__cause__ is None  # no chained exception carrying values along


def test_error_carries_path_and_reason() -> None:
    with pytest.raises(ConfigError) as caught:
        Gateway.from_dict(with_auth(hide_credentials="yes"))
    assert caught.value.path == "routes[0].plugins.basic-auth.hide_credentials"
    assert caught.value.reason == "expected a boolean, got 'yes'"
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json", ".toml"])
def test_from_file_every_format(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"gateway{suffix}"
    if suffix == ".toml":
        path.write_text(
            """profile = "classic"
[[consumers]]
username = "alex"
[consumers.plugins.basic-auth]
username = "alex"
password = "123456"
[[services]]
id = "basic-auth-app"
path_prefix = "/v1"
hosts = ["example.com"]
upstream = "http://127.0.0.1:9001"
[[routes]]
id = "json"
service_id = "basic-auth-app"
uri = "/json"
methods = ["GET"]
[routes.plugins.basic-auth]
hide_credentials = false
"""
        )
    elif suffix == ".json":
        path.write_text(json.dumps(GUIDE))
    else:
        path.write_text(yaml.safe_dump(GUIDE))
    gateway = Gateway.from_file(path)
    good = gateway.decide_now(RequestFacts("GET", "/v1/json", "example.com", (basic("alex", "123456"),)))
    bad = gateway.decide_now(RequestFacts("GET", "/v1/json", "example.com", (basic("alex", "nope"),)))
    assert good.consumer.username == "alex"  # type: ignore[union-attr]
    assert bad.body == b'{"message":"Password is error"}\n'  # type: ignore[union-attr]


def test_from_file_yaml_guide_scenario_as_in_spec(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        """profile: classic
consumers:
  - username: alex
    plugins:
      basic-auth:
        username: alex
        password: "123456"
services:
  - id: basic-auth-app
    name: basic-auth-app
    path_prefix: /v1
    hosts: [example.com]
    upstream: http://127.0.0.1:9001
routes:
  - id: json
    name: json
    service_id: basic-auth-app
    uri: /json
    methods: [GET]
    plugins:
      basic-auth:
        hide_credentials: false
"""
    )
    gateway = Gateway.from_file(str(path))
    assert [c.username for c in gateway.consumers] == ["alex"]
    assert gateway.routes[0].id == "json"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        pytest.param("bad.yaml", f"consumers: [username: {SECRET}\n", "invalid YAML at line", id="yaml"),
        pytest.param("bad.json", '{"consumers": [' + f'"{SECRET}"', "invalid JSON at line 1", id="json"),
        pytest.param("bad.toml", f"password = {SECRET}", "invalid TOML", id="toml"),
        pytest.param("gateway.ini", "[x]", "expected a .yaml, .yml, .json or .toml file", id="suffix"),
    ],
)
def test_unreadable_file(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        Gateway.from_file(path)
    assert caught.value.path == str(path)
    assert caught.value.reason.startswith(message)
    assert SECRET not in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        Gateway.from_file(tmp_path / "nope.yaml")


def test_password_hash_in_config() -> None:
    document = with_credential(username="alex", password_hash=hash_password(SECRET))
    gateway = Gateway.from_dict(document)
    ok = gateway.decide_now(RequestFacts("GET", "/v1/json", "example.com", (basic("alex", SECRET),)))
    wrong = gateway.decide_now(RequestFacts("GET", "/v1/json", "example.com", (basic("alex", "x"),)))
    assert ok.consumer is not None  # type: ignore[union-attr]
    assert wrong.body == b'{"message":"Password is error"}\n'  # type: ignore[union-attr]


def test_config_objects_are_immutable() -> None:
    gateway = Gateway.from_dict(GUIDE)
    route = gateway.routes[0]
    with pytest.raises(AttributeError):
        route.uri = "/other"  # type: ignore[misc]
    assert isinstance(route.methods, tuple)
    with pytest.raises(TypeError):
        gateway.consumers[0].labels["custom_id"] = "x"  # type: ignore[index]


def test_a_login_with_a_colon_is_refused_in_python() -> None:
    from consumer_auth import BasicAuthCredential, Consumer

    with pytest.raises(ConfigError) as caught:
        Consumer("alex", password=SECRET, login="alex:" + SECRET)
    assert caught.value.path == "username"
    assert SECRET not in str(caught.value)
    with pytest.raises(ConfigError, match="^username: must not contain ':'"):
        BasicAuthCredential("a:b", SECRET)
