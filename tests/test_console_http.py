"""The console over plain HTTP (uvicorn on loopback, no browser): sign-in limits, cookies, CSRF on the
sign-in form, what a form keeps of a stored document, and where errors are shown."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from consumer_auth import ConfigError
from consumer_auth.admin import AdminAPI
from consumer_auth.console import Console
from consumer_auth.console._forms import BASIC_AUTH, CONSUMER, ROUTE, errors_by_field
from consumer_auth.store import SQLStore
from servers import serve_asgi

KEY = "http-console-key"
SECRET = "pa55-Word-of-alex"


@dataclass
class Served:
    url: str
    store: SQLStore
    changes: list[int]
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, **headers: str) -> httpx.Client:
        made = httpx.Client(base_url=self.url, headers=headers, follow_redirects=False, timeout=30)
        self.clients.append(made)
        return made


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    store = SQLStore(f"sqlite:///{tmp_path / 'consumers.db'}")
    changes: list[int] = []
    admin = AdminAPI(store, admin_key=KEY, on_change=lambda: changes.append(1))
    with serve_asgi(Console(admin)) as url:
        served = Served(url, store, changes)
        yield served
        for client in served.clients:
            client.close()
    store.close()


def token_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def sign_in(client: httpx.Client, key: str = KEY) -> httpx.Response:
    form = client.get("/ui/login")
    return client.post("/ui/login", data={"csrf_token": token_of(form), "admin_key": key})


def test_wrong_keys_are_limited_per_client_then_answered_429(served: Served) -> None:
    client = served.client()
    for _ in range(5):
        assert sign_in(client, "wrong").status_code == 401
    locked = sign_in(client, KEY)  # even the right key waits out the lock
    assert locked.status_code == 429
    assert 1 <= int(locked.headers["retry-after"]) <= 60
    assert "Too many wrong keys" in locked.text
    assert "consumer_auth_console=" not in locked.headers.get("set-cookie", "")


def test_the_session_cookie_and_secure_over_tls(served: Served) -> None:
    plain = sign_in(served.client())
    assert plain.status_code == 303
    cookie = next(c for c in plain.headers.get_list("set-cookie") if c.startswith("consumer_auth_console="))
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/ui/" in cookie
    assert "Secure" not in cookie
    # Behind a TLS-terminating proxy on the same machine (uvicorn believes its X-Forwarded-Proto):
    client = served.client(**{"X-Forwarded-Proto": "https"})
    form = client.get("/ui/login")
    assert "Secure" in form.headers["set-cookie"]
    client.cookies.clear()  # a client keeps Secure cookies for https: hand this one over ourselves
    sign_in_cookie = form.headers["set-cookie"].split(";")[0]
    tls = client.post(
        "/ui/login",
        data={"csrf_token": token_of(form), "admin_key": KEY},
        headers={"Cookie": sign_in_cookie},
    )
    cookie = next(c for c in tls.headers.get_list("set-cookie") if c.startswith("consumer_auth_console="))
    assert "Secure" in cookie


def test_the_sign_in_form_needs_its_token(served: Served) -> None:
    client = served.client()
    refused = client.post("/ui/login", data={"admin_key": KEY})
    assert refused.status_code == 403
    refused = client.post("/ui/login", data={"admin_key": KEY, "csrf_token": "made-up"})
    assert refused.status_code == 403


def test_pages_need_a_session_and_posts_need_a_form(served: Served) -> None:
    client = served.client()
    assert client.get("/ui/routes/").headers["location"] == "/ui/login"
    assert client.post("/ui/routes/new", data={"id": "x"}).headers["location"] == "/ui/login"
    assert client.get("/ui").headers["location"] == "/ui/"
    sign_in(client)
    token = token_of(client.get("/ui/routes/new"))
    as_json = client.post("/ui/routes/new", json={"id": "x", "csrf_token": token})
    assert as_json.status_code == 415
    assert client.get("/ui/no/such/page").status_code == 404
    assert client.get("/ui/routes/missing").status_code == 404
    # Everything else is the Admin API, with its own key.
    assert client.get("/apisix/admin/routes").status_code == 401


def test_a_consumer_form_keeps_the_stored_hash_and_every_change_goes_through_the_admin_api(
    served: Served,
) -> None:
    client = served.client()
    sign_in(client)
    token = token_of(client.get("/ui/consumers/new"))
    created = client.post(
        "/ui/consumers/new",
        data={"csrf_token": token, "username": "alex", "login": "alex", "password": SECRET},
    )
    assert created.status_code == 303
    assert served.changes == [1]  # the Admin API's on_change: a local gateway applies it at once
    stored = served.store.get_resource("consumers", "alex")
    assert stored is not None
    hashed = stored.document["plugins"]["basic-auth"]["password_hash"]
    assert hashed.startswith("$argon2id$")
    assert "password" not in stored.document["plugins"]["basic-auth"]

    edited = client.post(
        "/ui/consumers/alex",
        data={"csrf_token": token, "username": "ignored", "desc": "Alex", "login": "alex-2", "password": ""},
    )
    assert edited.status_code == 303
    stored = served.store.get_resource("consumers", "alex")
    assert stored is not None
    assert stored.document["desc"] == "Alex"
    assert stored.document["plugins"]["basic-auth"] == {"username": "alex-2", "password_hash": hashed}

    page = client.get("/ui/consumers/alex").text
    assert SECRET not in page
    assert hashed not in page
    assert "$argon2" not in page

    # Clearing the username (no new password) removes Basic Auth from the consumer.
    client.post("/ui/consumers/alex", data={"csrf_token": token, "desc": "Alex", "login": "", "password": ""})
    stored = served.store.get_resource("consumers", "alex")
    assert stored is not None
    assert "plugins" not in stored.document


def test_an_error_about_the_whole_store_is_shown_at_the_field_it_names(served: Served) -> None:
    client = served.client()
    sign_in(client)
    token = token_of(client.get("/ui/routes/new"))
    refused = client.post(
        "/ui/routes/new", data={"csrf_token": token, "id": "json", "uri": "/json", "service_id": "nope"}
    )
    assert refused.status_code == 400
    assert re.search(
        r'data-path="service_id">.*?<p class="error"[^>]*>service_id: no service with id &#39;nope&#39;</p>',
        refused.text,
        re.S,
    ), refused.text
    assert served.store.get_resource("routes", "json") is None
    assert served.changes == []


@pytest.mark.parametrize(
    ("path", "form", "field", "within"),
    [
        pytest.param("plugins.basic-auth.realm", BASIC_AUTH, "realm", "", id="plugin-field"),
        pytest.param("routes/json.uris[1]", ROUTE, "uri", "routes/json", id="store-place-and-uris"),
        pytest.param("plugins.basic-auth.password_hash", CONSUMER, "password", "", id="hash-at-password"),
        pytest.param("plugins.basic-auth", CONSUMER, "login", "", id="plugin-at-login"),
    ],
)
def test_errors_are_placed_at_the_field_of_their_place(
    path: str, form: object, field: str, within: str
) -> None:
    assert isinstance(form, type(ROUTE))
    placed, general = errors_by_field(ConfigError(path, "bad"), form, within=within)
    assert general == []
    assert list(placed) == [field]
    assert placed[field].endswith(": bad")


def test_an_error_no_field_names_goes_to_the_top_of_the_form() -> None:
    placed, general = errors_by_field(ConfigError("consumers/bob", "duplicate"), ROUTE, within="routes/json")
    assert placed == {}
    assert general == ["consumers/bob: duplicate"]


def test_consumer_restriction_credentials_and_deletes(served: Served) -> None:
    client = served.client()
    sign_in(client)
    token = token_of(client.get("/ui/services/new"))

    def post(path: str, **form: str) -> httpx.Response:
        return client.post(path, data={"csrf_token": token, **form})

    assert post("/ui/services/new", id="app", upstream="http://127.0.0.1:9001").status_code == 303
    assert post("/ui/routes/new", id="json", uri="/json", service_id="app").status_code == 303
    assert post("/ui/consumers/new", username="alex").status_code == 303
    restricted = post(
        "/ui/routes/json/plugins/consumer-restriction", whitelist="alex\njack", rejected_code="451"
    )
    assert restricted.status_code == 303
    route = served.store.get_resource("routes", "json")
    assert route is not None
    assert route.document["plugins"] == {
        "consumer-restriction": {"whitelist": ["alex", "jack"], "rejected_code": 451}
    }
    refused = post("/ui/routes/json/plugins/consumer-restriction", whitelist="alex", rejected_code="teapot")
    assert refused.status_code == 400
    assert (
        "plugins.consumer-restriction.rejected_code: expected an integer, got &#39;teapot&#39;"
        in refused.text
    )
    refused = post("/ui/routes/json/plugins/consumer-restriction")
    assert refused.status_code == 400
    assert re.search(
        r'data-path="plugins.consumer-restriction.whitelist">.*?plugins.consumer-restriction.whitelist: one of',
        refused.text,
        re.S,
    )

    # A credential of alex: added, its password changed, deleted.
    added = post("/ui/consumers/alex/credentials/new", id="laptop", login="alex-laptop", password=SECRET)
    assert added.status_code == 303
    first = served.store.get_resource("credentials", "alex/laptop")
    assert first is not None
    assert "laptop" in client.get("/ui/consumers/alex").text
    post("/ui/consumers/alex/credentials/laptop", login="alex-laptop", password=SECRET + "2")
    second = served.store.get_resource("credentials", "alex/laptop")
    assert second is not None
    assert (
        second.document["plugins"]["basic-auth"]["password_hash"]
        != first.document["plugins"]["basic-auth"]["password_hash"]
    )
    assert "Delete?" in client.get("/ui/consumers/alex/credentials/laptop/delete").text
    assert post("/ui/consumers/alex/credentials/laptop/delete").status_code == 303
    assert served.store.get_resource("credentials", "alex/laptop") is None

    # A service that a route uses is not deleted; the page says which route.
    kept = post("/ui/services/app/delete")
    assert kept.status_code == 400
    assert "routes/json.service_id" in kept.text
    assert post("/ui/routes/json/plugins/consumer-restriction/delete").status_code == 303
    route = served.store.get_resource("routes", "json")
    assert route is not None
    assert "plugins" not in route.document
    assert post("/ui/routes/json/delete").status_code == 303
    assert post("/ui/services/app/delete").status_code == 303
    assert served.store.list_resources("services") == []


def test_consumer_groups_their_plugins_and_a_consumer_s_group(served: Served) -> None:
    client = served.client()
    sign_in(client)
    token = token_of(client.get("/ui/consumer_groups/new"))

    def post(path: str, **form: str) -> httpx.Response:
        return client.post(path, data={"csrf_token": token, **form})

    assert 'href="/ui/consumer_groups/">Consumer groups</a>' in client.get("/ui/consumers/").text
    created = post("/ui/consumer_groups/new", id="free", desc="the free tier", labels="tier=free")
    assert created.status_code == 303
    group = served.store.get_resource("consumer_groups", "free")
    assert group is not None
    assert group.document == {"id": "free", "desc": "the free tier", "labels": {"tier": "free"}}

    # A group's plugins run after authentication: Basic Auth is not offered, nor reachable.
    offered = client.get("/ui/consumer_groups/free/plugins/").text
    assert "Consumer Restriction" in offered
    assert "Basic Auth" not in offered
    assert client.get("/ui/consumer_groups/free/plugins/basic-auth").status_code == 404
    assert post("/ui/consumer_groups/free/plugins/basic-auth").status_code == 404
    restricted = post("/ui/consumer_groups/free/plugins/consumer-restriction", blacklist="mallory")
    assert restricted.status_code == 303
    group = served.store.get_resource("consumer_groups", "free")
    assert group is not None
    assert group.document["plugins"] == {"consumer-restriction": {"blacklist": ["mallory"]}}

    # A consumer chooses its group from the groups of the store.
    form = client.get("/ui/consumers/new").text
    assert re.search(
        r'<select id="field-group_id" name="group_id">\s*<option value="">\(none\)</option>\s*<option value="free">free</option>',
        form,
    )
    assert (
        post("/ui/consumers/new", username="jack", group_id="free", login="jack", password=SECRET).status_code
        == 303
    )
    jack = served.store.get_resource("consumers", "jack")
    assert jack is not None
    assert jack.document["group_id"] == "free"
    assert '<option value="free" selected>free</option>' in client.get("/ui/consumers/jack").text
    assert '<a href="/ui/consumer_groups/free">free</a>' in client.get("/ui/consumers/").text
    listing = client.get("/ui/consumer_groups/").text
    assert re.search(r"<td>the free tier</td>\s*<td>consumer-restriction</td>\s*<td>1</td>", listing)
    assert '<a href="/ui/consumers/jack">jack</a>' in client.get("/ui/consumer_groups/free").text
    missing = post("/ui/consumers/new", username="bob", group_id="gold")
    assert missing.status_code == 400
    assert re.search(
        r'data-path="group_id">.*?<p class="error" id="error-group_id" role="alert">'
        r"group_id: no consumer group with id &#39;gold&#39;</p>",
        missing.text,
        re.S,
    )

    # A group a consumer is in is not deleted, and the page says which consumer.
    kept = post("/ui/consumer_groups/free/delete")
    assert kept.status_code == 400
    assert "can not delete this consumer group, consumer [jack] is still using it now" in kept.text
    assert post("/ui/consumers/jack", group_id="", login="jack", password="").status_code == 303
    jack = served.store.get_resource("consumers", "jack")
    assert jack is not None
    assert "group_id" not in jack.document
    assert jack.document["plugins"]["basic-auth"]["password_hash"].startswith("$argon2id$")  # kept
    assert post("/ui/consumer_groups/free/delete").status_code == 303
    assert served.store.list_resources("consumer_groups") == []


def test_a_head_request_reads_and_never_writes(served: Served) -> None:
    served.store.put_resource("routes", "json", {"uri": "/json", "name": "json"})
    client = served.client()
    sign_in(client)
    for path in ("/ui/routes/json", "/ui/routes/json/delete", "/ui/routes/json/plugins/basic-auth"):
        answer = client.head(path)
        assert answer.status_code == 200
        assert answer.content == b""
    route = served.store.get_resource("routes", "json")
    assert route is not None
    assert route.document == {"id": "json", "uri": "/json", "name": "json"}


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"nodes":' + "[" * 3000 + "]" * 3000 + "}", id="nested-3000-deep"),
        pytest.param('{"nodes": {"a:1": ' + "9" * 5000 + "}}", id="number-too-long"),
    ],
)
def test_upstream_json_the_parser_cannot_take_is_a_form_error(text: str) -> None:
    from consumer_auth.console._forms import SERVICE, FormError

    with pytest.raises(FormError) as raised:
        SERVICE.apply({"id": ["app"], "upstream": [text]})
    assert raised.value.error.path == "upstream"
