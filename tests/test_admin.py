"""The Admin API over real HTTP (uvicorn on loopback) on a SQLite store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from consumer_auth import ConfigError, Gateway, RequestFacts
from consumer_auth.admin import AdminAPI
from consumer_auth.store import SQLStore
from servers import serve_asgi
from support import basic

KEY = "the-admin-key"
SECRET = "s3cret-Passw0rd"


@dataclass
class Admin:
    """A client of a running Admin API that remembers every answer it got."""

    url: str
    store: SQLStore
    answers: list[httpx.Response] = field(default_factory=list)

    def call(
        self, method: str, path: str, body: Any = None, *, key: str | None = KEY, raw: bytes | None = None
    ) -> httpx.Response:
        headers = {"X-API-KEY": key} if key is not None else {}
        content = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        response = httpx.request(
            method, f"{self.url}/apisix/admin/{path}", content=content, headers=headers, timeout=30
        )
        self.answers.append(response)
        return response


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[Admin]:
    store = SQLStore(f"sqlite:///{tmp_path / 'consumers.db'}")
    with serve_asgi(AdminAPI(store, admin_key=KEY)) as url:
        client = Admin(url, store)
        yield client
        for response in client.answers:  # no password or hash ever leaves the admin API
            assert SECRET not in response.text
            assert "$argon2" not in response.text
            assert '"password' not in response.text, response.text
    store.close()


def basic_auth(login: str, password: str = SECRET) -> dict[str, Any]:
    return {"plugins": {"basic-auth": {"username": login, "password": password}}}


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(None, id="missing"),
        pytest.param("wrong", id="wrong"),
        pytest.param("", id="empty"),
        pytest.param(KEY + "x", id="longer"),
        pytest.param(KEY.upper(), id="other-case"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_without_the_admin_key_every_call_is_401_and_changes_nothing(
    admin: Admin, key: str | None, method: str
) -> None:
    response = admin.call(method, "consumers/alex", basic_auth("alex"), key=key)
    assert response.status_code == 401
    assert response.json() == {"error_msg": "failed to check token"}
    assert admin.store.get_resource("consumers", "alex") is None


def test_two_admin_key_headers_are_refused(admin: Admin) -> None:
    response = httpx.get(
        f"{admin.url}/apisix/admin/consumers", headers=[("X-API-KEY", KEY), ("X-API-KEY", KEY)], timeout=30
    )
    assert response.status_code == 401


def test_an_admin_api_without_a_key_cannot_be_built(tmp_path: Path) -> None:
    store = SQLStore(f"sqlite:///{tmp_path / 'c.db'}")
    keys: list[str | list[str]] = ["", []]
    for key in keys:
        with pytest.raises(ConfigError, match="admin_key"):
            AdminAPI(store, admin_key=key)
    store.close()


def test_consumers_and_credentials_lifecycle(admin: Admin) -> None:
    created = admin.call("PUT", "consumers", {"username": "alex", "desc": "Alex", **basic_auth("alex")})
    assert created.status_code == 201
    assert created.json()["key"] == "/apisix/consumers/alex"
    assert created.json()["value"] == {
        "username": "alex",
        "desc": "Alex",
        "plugins": {"basic-auth": {"username": "alex"}},
    }
    assert admin.call("PUT", "consumers/alex", {"labels": {"custom_id": "42"}}).status_code == 200

    credential = admin.call("PUT", "consumers/alex/credentials/laptop", basic_auth("alex-laptop"))
    assert credential.status_code == 201
    assert credential.json()["key"] == "/apisix/consumers/alex/credentials/laptop"
    assert credential.json()["value"] == {
        "id": "laptop",
        "plugins": {"basic-auth": {"username": "alex-laptop"}},
    }
    assert credential.json()["createdIndex"] == credential.json()["modifiedIndex"]

    listed = admin.call("GET", "consumers/alex/credentials").json()
    assert listed["total"] == 1
    assert listed["list"][0]["value"]["id"] == "laptop"
    assert admin.call("GET", "consumers").json()["total"] == 1
    assert admin.call("GET", "consumers/alex").json()["value"]["labels"] == {"custom_id": "42"}

    # The stored password is an argon2id hash, and it works.
    stored = admin.store.get_resource("credentials", "alex/laptop")
    assert stored is not None
    assert stored.document["plugins"]["basic-auth"]["password_hash"].startswith("$argon2id$")
    gateway = Gateway.from_dict({"routes": [{"uri": "/json", "plugins": {"basic-auth": {}}}]})
    gateway.attach(admin.store)
    consumer = gateway.consumers[0]
    assert consumer.credentials[0].id == "laptop"
    assert consumer.credentials[0].verifier.verify(SECRET)
    gateway.close()

    assert admin.call("DELETE", "consumers/alex/credentials/laptop").json() == {
        "deleted": "1",
        "key": "/apisix/consumers/alex/credentials/laptop",
    }
    assert admin.call("GET", "consumers/alex/credentials/laptop").status_code == 404
    assert admin.call("DELETE", "consumers/alex").status_code == 200
    missing = admin.call("DELETE", "consumers/alex")
    assert missing.status_code == 404
    assert missing.json() == {"message": "Key not found"}
    assert admin.call("GET", "consumers/alex/credentials").status_code == 404


def test_services_and_routes(admin: Admin) -> None:
    service = admin.call("PUT", "services/app", {"path_prefix": "/v1", "plugins": {"basic-auth": {}}})
    assert service.status_code == 201
    route = admin.call("POST", "routes", {"uri": "/json", "service_id": "app", "methods": ["GET"]})
    assert route.status_code == 201
    route_id = route.json()["value"]["id"]
    assert route.json()["key"] == f"/apisix/routes/{route_id}"
    assert admin.call("GET", f"routes/{route_id}").json()["value"]["service_id"] == "app"
    assert admin.call("GET", "routes").json()["total"] == 1

    unused = admin.call("DELETE", "services/app")
    assert unused.status_code == 400
    assert unused.json() == {
        "error_msg": f"invalid configuration: routes/{route_id}.service_id: no service with id 'app'"
    }
    assert admin.call("DELETE", f"routes/{route_id}").status_code == 200
    assert admin.call("DELETE", "services/app").status_code == 200


def test_consumer_groups_round_trip(admin: Admin) -> None:
    restriction = {"consumer-restriction": {"whitelist": ["nobody"], "rejected_msg": "free tier"}}
    created = admin.call("PUT", "consumer_groups/free", {"desc": "the free tier", "plugins": restriction})
    assert created.status_code == 201
    assert created.headers["content-type"] == "application/json"
    assert created.json()["key"] == "/apisix/consumer_groups/free"
    assert created.json()["value"] == {"id": "free", "desc": "the free tier", "plugins": restriction}
    assert created.json()["createdIndex"] == created.json()["modifiedIndex"]
    # PUT to the collection with the id in the body, as APISIX; POST is not a way to make one (APISIX)
    assert admin.call("PUT", "consumer_groups", {"id": "gold", "labels": {"tier": "gold"}}).status_code == 201
    post = admin.call("POST", "consumer_groups", {"plugins": {}})
    assert (post.status_code, post.headers["allow"]) == (405, "GET, PUT")
    assert admin.call("PUT", "consumer_groups", {"plugins": {}}).json() == {
        "error_msg": "invalid configuration: id: required"
    }

    listed = admin.call("GET", "consumer_groups").json()
    assert listed["total"] == 2
    assert [item["key"] for item in listed["list"]] == [
        "/apisix/consumer_groups/free",
        "/apisix/consumer_groups/gold",
    ]
    fetched = admin.call("GET", "consumer_groups/free").json()
    assert fetched == created.json()

    dangling = admin.call("PUT", "consumers/alex", {**basic_auth("alex"), "group_id": "silver"})
    assert dangling.status_code == 400
    assert dangling.json() == {
        "error_msg": "invalid configuration: consumers/alex.group_id: no consumer group with id 'silver'"
    }
    joined = admin.call("PUT", "consumers/alex", {**basic_auth("alex"), "group_id": "free"})
    assert joined.status_code == 201
    assert joined.json()["value"]["group_id"] == "free"

    gateway = Gateway.from_dict({"routes": [{"uri": "/json", "plugins": {"basic-auth": {}}}]})
    gateway.attach(admin.store)
    facts = RequestFacts("GET", "/json", "localhost", (basic("alex", SECRET),))
    assert gateway.decide_now(facts).body == b'{"message":"free tier"}\n'  # type: ignore[union-attr]
    gateway.close()

    replaced = admin.call("PUT", "consumer_groups/free", {"plugins": {}})
    assert replaced.status_code == 200
    assert replaced.json()["value"] == {"id": "free", "plugins": {}}
    assert replaced.json()["modifiedIndex"] > replaced.json()["createdIndex"]

    in_use = admin.call("DELETE", "consumer_groups/free")
    assert in_use.status_code == 400
    assert in_use.content == (
        b'{"error_msg":"can not delete this consumer group, consumer [alex] is still using it now"}\n'
    )
    assert admin.call("GET", "consumer_groups/free").status_code == 200
    assert admin.call("PUT", "consumers/alex", basic_auth("alex")).status_code == 200  # leaves the group
    assert admin.call("DELETE", "consumer_groups/free").json() == {
        "deleted": "1",
        "key": "/apisix/consumer_groups/free",
    }
    assert admin.call("GET", "consumer_groups/free").json() == {"message": "Key not found"}
    assert admin.call("DELETE", "consumer_groups/free").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        pytest.param(
            "PUT",
            "consumers/alex",
            {"plugins": {"basic-auth": {"username": "alex", "password": ""}}},
            "invalid configuration: plugins.basic-auth.password: expected a non-empty string",
            id="empty-password",
        ),
        pytest.param(
            "PUT",
            "consumers/alex",
            {"plugins": {"basic-auth": {"username": "alex", "password": 123456}}},
            "invalid configuration: plugins.basic-auth.password: expected a string, got int",
            id="password-not-a-string",
        ),
        pytest.param(
            "PUT",
            "consumers/alex",
            {"username": "bob"},
            "invalid configuration: username: expected 'alex' (as in the path), got 'bob'",
            id="username-mismatch",
        ),
        pytest.param(
            "PUT",
            "consumers",
            {"desc": "nobody"},
            "invalid configuration: username: required",
            id="no-username",
        ),
        pytest.param(
            "PUT",
            "consumers/al%20ex",
            {},
            "invalid configuration: username: expected letters, digits, '_' or '-', got 'al ex'",
            id="bad-username",
        ),
        pytest.param(
            "PUT",
            "consumers/alex",
            {"colour": "blue"},
            "invalid configuration: colour: unknown key (expected one of: credentials, desc, group_id, labels, plugins, username)",
            id="unknown-key",
        ),
        pytest.param(
            "PUT",
            "consumers/ghost/credentials/one",
            {"plugins": {"basic-auth": {"username": "g", "password": "x"}}},
            "invalid configuration: no consumer named 'ghost'",
            id="credential-of-missing-consumer",
        ),
        pytest.param(
            "PUT",
            "consumers/taken/credentials/one",
            {"plugins": {}},
            "invalid configuration: plugins: expected a 'basic-auth' credential",
            id="credential-without-basic-auth",
        ),
        pytest.param(
            "PUT",
            "consumers/taken/credentials/b%20d",
            {"plugins": {}},
            "invalid configuration: id: expected 1-64 letters, digits, '_', '-' or '.', got 'b d'",
            id="bad-credential-id",
        ),
        pytest.param(
            "PUT",
            "consumers/other",
            {"plugins": {"basic-auth": {"username": "taken", "password": "x"}}},
            "invalid configuration: consumers/other: duplicate basic-auth username 'taken' (also in consumers/taken)",
            id="duplicate-login",
        ),
        pytest.param(
            "PUT",
            "routes/r1",
            {"uri": "/json", "service_id": "nope"},
            "invalid configuration: routes/r1.service_id: no service with id 'nope'",
            id="dangling-service",
        ),
        pytest.param(
            "PUT",
            "routes/r1",
            {"uri": "json"},
            "invalid configuration: uri: expected a path starting with '/' (a '*' only at the end), got 'json'",
            id="bad-uri",
        ),
        pytest.param(
            "PUT",
            "routes/r1",
            {"uri": "/json", "plugins": {"basic-auth": {"hide_credentials": "yes"}}},
            "invalid configuration: plugins.basic-auth.hide_credentials: expected a boolean, got 'yes'",
            id="bad-plugin-field",
        ),
        pytest.param(
            "POST",
            "routes",
            {"id": "r9", "uri": "/json"},
            "invalid configuration: id: not allowed with POST (PUT to /apisix/admin/{kind}/{id} instead)",
            id="post-with-id",
        ),
        pytest.param(
            "PUT", "consumers/alex", [], "invalid request body: expected a JSON object", id="not-an-object"
        ),
        pytest.param(
            "PUT",
            "consumers/alex",
            {"plugins": {"basic-auth": {"username": "alex:" + SECRET, "password": SECRET}}},
            "invalid configuration: plugins.basic-auth.username: must not contain ':' (RFC 7617: a client's username ends at the first ':')",
            id="colon-in-login",
        ),
        pytest.param(
            "PUT",
            "consumers/taken/credentials/c2",
            {"plugins": {"basic-auth": {"username": "t:" + SECRET, "password": SECRET}}},
            "invalid configuration: plugins.basic-auth.username: must not contain ':' (RFC 7617: a client's username ends at the first ':')",
            id="colon-in-credential-login",
        ),
        pytest.param(
            "PUT",
            "consumers/alex",
            {"plugins": {"basic-auth": "alex:" + SECRET}},
            "invalid configuration: plugins.basic-auth: expected a mapping, got str",
            id="secret-in-a-wrong-shape",
        ),
        pytest.param(
            "PUT",
            "routes/r1",
            {"uri": "/json", "plugins": {"basic-auth": {"anonymous_consumer": "ghost"}}},
            "invalid configuration: routes/r1.plugins.basic-auth.anonymous_consumer: no consumer named 'ghost'",
            id="dangling-anonymous-consumer",
        ),
    ],
)
def test_validation_errors_are_400_with_an_error_msg(
    admin: Admin, method: str, path: str, body: Any, message: str
) -> None:
    assert admin.call("PUT", "consumers/taken", basic_auth("taken")).status_code == 201
    before = admin.store.revision()
    response = admin.call(method, path, body)
    assert response.status_code == 400
    assert response.json() == {"error_msg": message}
    assert admin.store.revision() == before  # nothing was written


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(
            b"{not json",
            "invalid request body: Expecting property name enclosed in double quotes at line 1, column 2",
            id="bad-json",
        ),
        pytest.param(b"", "invalid request body: empty", id="empty"),
        pytest.param(b"\xff\xfe", "invalid request body: not UTF-8", id="not-utf8"),
        pytest.param(
            b'{"labels":' + b"[" * 3000 + b"]" * 3000 + b"}",
            "invalid request body: nested deeper than 32 levels",
            id="nested-3000-deep",
        ),
        pytest.param(
            b'{"labels":' + b"[" * 100 + b"]" * 100 + b"}",
            "invalid request body: nested deeper than 32 levels",
            id="nested-100-deep",
        ),
        pytest.param(
            b'{"labels": {"a": ' + b"9" * 5000 + b"}}",
            "invalid request body: an integer with too many digits",
            id="number-too-long",
        ),
    ],
)
def test_unreadable_bodies_are_400(admin: Admin, raw: bytes, message: str) -> None:
    response = admin.call("PUT", "consumers/alex", raw=raw)
    assert response.status_code == 400
    assert response.json() == {"error_msg": message}


def test_unknown_paths_and_methods(admin: Admin) -> None:
    assert admin.call("GET", "upstreams").status_code == 404
    assert admin.call("GET", "consumers/a/b/c/d").status_code == 404
    wrong = admin.call("POST", "consumers/alex", {})
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET, PUT, DELETE"
    assert admin.call("DELETE", "routes").status_code == 405


def test_a_password_hash_may_be_given_instead(admin: Admin) -> None:
    from consumer_auth import hash_password

    hashed = hash_password(SECRET)
    response = admin.call(
        "PUT", "consumers/alex", {"plugins": {"basic-auth": {"username": "alex", "password_hash": hashed}}}
    )
    assert response.status_code == 201
    stored = admin.store.get_resource("consumers", "alex")
    assert stored is not None
    assert stored.document["plugins"]["basic-auth"]["password_hash"] == hashed


def test_a_body_over_the_limit_is_413(admin: Admin) -> None:
    response = admin.call("PUT", "consumers/alex", raw=b'{"desc": "' + b"x" * 1_600_000 + b'"}')
    assert response.status_code == 413
    assert response.json() == {"error_msg": "invalid request body: larger than 1.5 MiB"}
    assert admin.store.get_resource("consumers", "alex") is None


# --- input a store cannot keep: 400, and nothing changes -------------------------------------------

SHORT_SALT_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2hvcnQ$U2VjcmV0SGFzaFBhcnRTZWNyZXRIYXNoUGFydA"


@pytest.mark.parametrize(
    ("path", "raw", "message"),
    [
        pytest.param(
            "consumers/alex",
            b'{"labels": {"n": ' + b"9" * 5000 + b"}}",
            "invalid request body: an integer with too many digits",
            id="5000-digit-integer",
        ),
        pytest.param(
            "consumers/alex",
            b'{"labels": {"n": 1e999}}',
            "invalid request body: a number too large to store",
            id="infinite-number",
        ),
        pytest.param(
            "consumers/alex",
            b'{"labels": {"n": NaN}}',
            "invalid request body: NaN is not a JSON number",
            id="nan",
        ),
        pytest.param(
            "consumers/alex",
            b'{"plugins": {"basic-auth": {"username": "alex", "password": "ab\\ud800cd"}}}',
            "invalid configuration: plugins.basic-auth.password: expected valid Unicode text, got a lone surrogate",
            id="lone-surrogate-password",
        ),
        pytest.param(
            "consumers/alex",
            b'{"desc": "x\\udfffy"}',
            "invalid configuration: desc: expected valid Unicode text, got a lone surrogate",
            id="lone-surrogate-desc",
        ),
        pytest.param(
            "consumers/alex",
            b'{"plugins": {"basic-auth": {"username": "alex", "password": "x"}, "\\ud800": {}}}',
            "invalid configuration: plugins.<key>: expected valid Unicode text, got a lone surrogate",
            id="lone-surrogate-key",
        ),
        pytest.param(
            "consumers/alex",
            b'{"desc": "a\\u0000b"}',
            "invalid configuration: desc: expected text without NUL characters",
            id="nul-character",
        ),
        pytest.param(
            "consumers/" + "n" * 129,
            b"{}",
            "invalid configuration: username: expected at most 128 characters, got 129",
            id="long-consumer-name",
        ),
        pytest.param(
            "consumers/alex",
            json.dumps(
                {"plugins": {"basic-auth": {"username": "alex", "password_hash": SHORT_SALT_HASH}}}
            ).encode(),
            "invalid configuration: plugins.basic-auth.password_hash: not a usable argon2 hash: "
            "salt_len 5 is outside 8-1024",
            id="short-salt-hash",
        ),
        pytest.param(
            "consumers/alex",
            json.dumps(
                {
                    "plugins": {
                        "basic-auth": {
                            "username": "alex",
                            "password_hash": "$argon2id$v=19$m=4194304,t=100,p=4$c29tZXNhbHRzb21lc2FsdA$"
                            "U2VjcmV0SGFzaFBhcnRTZWNyZXRIYXNoUGFydA",
                        }
                    }
                }
            ).encode(),
            "invalid configuration: plugins.basic-auth.password_hash: not a usable argon2 hash: "
            "time_cost 100 is outside 1-16",
            id="4-gib-100-passes",
        ),
    ],
)
def test_input_a_store_cannot_keep_is_400_and_changes_nothing(
    admin: Admin, path: str, raw: bytes, message: str
) -> None:
    assert admin.call("PUT", "consumers/taken", basic_auth("taken")).status_code == 201
    before = admin.store.revision()
    documents = [r.document for r in admin.store.list_resources("consumers")]
    response = admin.call("PUT", path, raw=raw)
    assert response.status_code == 400, response.text
    assert response.json() == {"error_msg": message}
    assert "U2VjcmV0SGFzaFBhcnQ" not in response.text
    assert admin.store.revision() == before
    assert [r.document for r in admin.store.list_resources("consumers")] == documents


def test_a_bad_hash_stored_before_does_not_block_removing_or_changing_other_consumers(admin: Admin) -> None:
    for name in ("bad", "compromised", "other"):
        assert admin.call("PUT", f"consumers/{name}", basic_auth(name)).status_code == 201
    # a hash that an older version let through, written straight into the database
    from sqlalchemy import update

    store = admin.store
    table = store._resources
    document = json.dumps(
        {"username": "bad", "plugins": {"basic-auth": {"username": "bad", "password_hash": SHORT_SALT_HASH}}}
    )
    with store._engine.begin() as connection:
        connection.execute(
            update(table).where(table.c.kind == "consumers", table.c.key == "bad").values(document=document)
        )
    assert admin.call("DELETE", "consumers/compromised").status_code == 200
    assert store.get_resource("consumers", "compromised") is None
    assert admin.call("PUT", "consumers/other", basic_auth("other", "n3w-" + SECRET)).status_code == 200
    # a write that adds a mistake of its own is still refused
    clash = admin.call("PUT", "consumers/again", basic_auth("other"))
    assert clash.status_code == 400
    assert "duplicate basic-auth username" in clash.json()["error_msg"]
    assert admin.call("DELETE", "consumers/bad").status_code == 200
    assert [r.key for r in store.list_resources("consumers")] == ["other"]
