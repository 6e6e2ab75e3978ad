"""Consumers managed in Django admin: the models, the admin pages, the ``"django"`` store the gateway
follows (in this process and in another), import/export, and the checks.

Writes are real commits (``django_db.consumer_db``), on SQLite and on PostgreSQL, so the store's own
thread and other processes see them as in a running site.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.test import Client, override_settings
from django.urls import path

from consumer_auth.contrib.django.checks import check_database, check_settings
from consumer_auth.contrib.django.conf import conf
from consumer_auth.contrib.django.models import BasicAuthCredential, Consumer, ConsumerGroup
from consumer_auth.contrib.django.store import DjangoStore
from consumer_auth.errors import StoreError
from consumer_auth.sansio.passwords import apr1_hash
from django_db import POSTGRES_SETTINGS, consumer_db, sqlite_db  # noqa: F401 - fixtures
from proxy_servers import Process, request
from support import basic

HERE = Path(__file__).resolve().parent
ALEX = basic("alex", "123456")
DEADLINE = 15.0  # generous: the machine is shared; the interval under test is 0.3 s


def whoami(request: HttpRequest) -> JsonResponse:
    consumer = getattr(request, "consumer", None)
    return JsonResponse({"consumer": consumer.username if consumer else None})


urlpatterns = [path("admin/", admin.site.urls), path("json", whoami)]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "consumer_auth.contrib.django.middleware.ConsumerAuthMiddleware",
]


def store_setting(poll_interval: float) -> dict[str, Any]:
    return {
        "store": {"type": "django", "poll_interval": poll_interval},
        "routes": [{"uri": "/json", "plugins": {"basic-auth": {}}}],
        "unmatched": "pass",  # the admin pages are Django's own
    }


@pytest.fixture
def site(consumer_db: str) -> Iterator[str]:  # noqa: F811 - the fixture
    """This module's URLs and middleware; the gateway follows the store, checking every 60 s (so that
    only the commit signal can make a change arrive in time)."""
    with override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=MIDDLEWARE, CONSUMER_AUTH=store_setting(60)):
        try:
            yield consumer_db
        finally:
            conf.reset()  # stops the store's thread and closes its connection


_pages: list[bytes] = []


class AdminClient:
    """Django's test client as a signed-in user; remembers every page it was shown."""

    def __init__(self, user: User) -> None:
        self.client = Client()
        self.client.force_login(user)

    def get(self, url: str, **params: Any) -> Any:
        response = self.client.get(url, params)
        _pages.append(response.content)
        return response

    def post(self, url: str, data: dict[str, Any]) -> Any:
        response = self.client.post(url, data, follow=True)
        _pages.append(response.content)
        for page in response.redirect_chain:
            assert page[1] in (301, 302)
        return response


def _user(name: str, *, superuser: bool = False, perms: tuple[str, ...] = ()) -> User:
    User.objects.filter(username=name).delete()
    user = User.objects.create_user(name, password="not-used", is_staff=True, is_superuser=superuser)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


@pytest.fixture
def superuser(site: str) -> AdminClient:
    return AdminClient(_user("root", superuser=True))


def gateway_answer(authorization: str | None) -> tuple[int, bytes]:
    headers = {"Authorization": authorization} if authorization else {}
    response = Client().get("/json", headers=headers)
    return response.status_code, response.content


def eventually(check: Callable[[], Any], expected: Any, deadline: float = DEADLINE) -> None:
    """Wait until ``check()`` gives ``expected`` (a change reaching a gateway), failing after ``deadline``."""
    end = time.monotonic() + deadline
    while True:
        got = check()
        if got == expected:
            return
        if time.monotonic() > end:
            raise AssertionError(f"still {got!r}, expected {expected!r}")
        time.sleep(0.02)


OK_ALEX = (200, b'{"consumer": "alex"}')
PASSWORD_IS_ERROR = (401, b'{"message":"Password is error"}\n')
MISSING_CONSUMER = (401, b'{"message":"Missing related consumer"}\n')
INVALID_USER = (401, b'{"message":"Invalid user key in authorization"}\n')


def consumer_form(
    name: str, credentials: list[dict[str, str]], initial: int = 0, **fields: str
) -> dict[str, Any]:
    """The POST data of the consumer add/change form, with its credentials inline."""
    data: dict[str, Any] = {
        "name": name,
        "custom_id": fields.get("custom_id", ""),
        "labels": fields.get("labels", "{}"),
        "desc": fields.get("desc", ""),
        "credentials-TOTAL_FORMS": str(len(credentials)),
        "credentials-INITIAL_FORMS": str(initial),
        "credentials-MIN_NUM_FORMS": "0",
        "credentials-MAX_NUM_FORMS": "1000",
    }
    for index, credential in enumerate(credentials):
        for key, value in credential.items():
            data[f"credentials-{index}-{key}"] = value
    return data


def add_alex(client: AdminClient) -> Consumer:
    response = client.post(
        "/admin/consumer_auth/consumer/add/",
        consumer_form(
            "alex",
            [{"ident": "alex-1", "username": "alex", "password": "123456"}],
            custom_id="c-42",
            labels='{"team": "billing"}',
        ),
    )
    assert response.status_code == 200
    assert b"was added successfully" in response.content, response.content.decode()[:3000]
    return Consumer.objects.get(name="alex")


# -- the admin pages and the gateway of this process --------------------------------------------------


def test_admin_changes_reach_this_process_at_commit(superuser: AdminClient) -> None:
    assert gateway_answer(ALEX) == MISSING_CONSUMER  # nobody yet: the gateway is built, empty
    alex = add_alex(superuser)
    credential = alex.credentials.get()
    assert credential.password_hash.startswith("$argon2id$")
    assert credential.ident == "alex-1"
    eventually(lambda: gateway_answer(ALEX), OK_ALEX)  # the revision check is 60 s away: the signal did it
    seen = Client().get("/json", headers={"Authorization": ALEX})
    assert seen.status_code == 200

    # the "Set password" page: the old password stops working, the new one works
    url = f"/admin/consumer_auth/basicauthcredential/{credential.pk}/password/"
    assert superuser.get(url).status_code == 200
    mismatch = superuser.post(url, {"password1": "new-pass", "password2": "other"})
    assert b"The two passwords differ." in mismatch.content
    done = superuser.post(url, {"password1": "s3cret!", "password2": "s3cret!"})
    assert b"Password set." in done.content
    eventually(lambda: gateway_answer(ALEX), PASSWORD_IS_ERROR)
    assert gateway_answer(basic("alex", "s3cret!")) == OK_ALEX

    # remove the credential inline: the consumer stays, without a login
    superuser.post(
        f"/admin/consumer_auth/consumer/{alex.pk}/change/",
        consumer_form(
            "alex",
            [
                {
                    "id": str(credential.pk),
                    "consumer": str(alex.pk),
                    "ident": "alex-1",
                    "username": "alex",
                    "password": "",
                    "DELETE": "on",
                }
            ],
            initial=1,
            custom_id="c-42",
        ),
    )
    assert not BasicAuthCredential.objects.exists()
    eventually(lambda: gateway_answer(basic("alex", "s3cret!")), MISSING_CONSUMER)

    # delete the consumer through the admin's confirmation page
    superuser.post(f"/admin/consumer_auth/consumer/{alex.pk}/delete/", {"post": "yes"})
    assert not Consumer.objects.exists()


def test_consumer_groups_in_admin_reach_the_gateway(superuser: AdminClient) -> None:
    alex = add_alex(superuser)
    eventually(lambda: gateway_answer(ALEX), OK_ALEX)
    plugins = {"consumer-restriction": {"blacklist": ["alex"], "rejected_msg": "free tier"}}
    added = superuser.post(
        "/admin/consumer_auth/consumergroup/add/",
        {"ident": "free", "desc": "the free tier", "labels": "{}", "plugins": json.dumps(plugins)},
    )
    assert b"was added successfully" in added.content, added.content.decode()[:3000]
    free = ConsumerGroup.objects.get(ident="free")
    assert free.plugins == plugins
    credential = alex.credentials.get()
    inline = {
        "id": str(credential.pk),
        "consumer": str(alex.pk),
        "ident": "alex-1",
        "username": "alex",
        "password": "",
    }
    form = consumer_form("alex", [inline], initial=1, custom_id="c-42", labels='{"team": "billing"}')
    changed = superuser.post(
        f"/admin/consumer_auth/consumer/{alex.pk}/change/", {**form, "group": str(free.pk)}
    )
    assert b"was changed successfully" in changed.content, changed.content.decode()[:3000]
    eventually(lambda: gateway_answer(ALEX), (403, b'{"message":"free tier"}\n'))  # the group's plugin
    assert DjangoStore().load().consumer_groups[0].id == "free"

    # the consumer list shows and filters by group; the group list counts its consumers
    listing = superuser.get("/admin/consumer_auth/consumer/", group__id__exact=str(free.pk)).content.decode()
    assert "alex" in listing
    assert "1 consumer" in listing
    groups = superuser.get("/admin/consumer_auth/consumergroup/").content.decode()
    assert "consumer-restriction" in groups
    assert '<td class="field-members">1</td>' in groups

    # the plugins are checked as a configuration file's are
    for bad, message in [
        ('{"basic-auth": {"username": "g", "password": "x"}}', "a consumer group holds no credentials"),
        ('{"consumer-restriction": {}}', "consumer-restriction.whitelist: one of"),
        ('{"key-auth": {}}', "key-auth: unknown plugin"),
    ]:
        refused = superuser.post(
            f"/admin/consumer_auth/consumergroup/{free.pk}/change/",
            {"ident": "free", "desc": "", "labels": "{}", "plugins": bad},
        )
        assert message in refused.content.decode(), (bad, refused.content.decode()[:4000])
    free.refresh_from_db()
    assert free.plugins == plugins

    # a group its consumers are in is not deleted (Django's protected-objects page names them)
    protected = superuser.post(f"/admin/consumer_auth/consumergroup/{free.pk}/delete/", {"post": "yes"})
    text = protected.content.decode()
    assert "would require deleting the following protected related objects" in text
    assert re.search(r"Consumer: <a [^>]*>alex</a>", text), text[:4000]
    assert ConsumerGroup.objects.filter(ident="free").exists()
    superuser.post(f"/admin/consumer_auth/consumer/{alex.pk}/change/", {**form, "group": ""})
    eventually(lambda: gateway_answer(ALEX), OK_ALEX)
    superuser.post(f"/admin/consumer_auth/consumergroup/{free.pk}/delete/", {"post": "yes"})
    assert not ConsumerGroup.objects.exists()


def test_a_consumer_change_keeps_the_password_when_left_empty(superuser: AdminClient) -> None:
    alex = add_alex(superuser)
    credential = alex.credentials.get()
    stored = credential.password_hash
    superuser.post(
        f"/admin/consumer_auth/consumer/{alex.pk}/change/",
        consumer_form(
            "alex",
            [
                {
                    "id": str(credential.pk),
                    "consumer": str(alex.pk),
                    "ident": "alex-1",
                    "username": "alex",
                    "password": "",
                }
            ],
            initial=1,
            custom_id="c-43",
        ),
    )
    credential.refresh_from_db()
    assert credential.password_hash == stored
    eventually(lambda: Client().get("/json", headers={"Authorization": ALEX}).status_code, 200)


def test_admin_forms_refuse_what_the_gateway_would(superuser: AdminClient) -> None:
    add_alex(superuser)
    cases = [
        (consumer_form("bad name", []), b"Letters, digits"),
        (consumer_form("bob", [{"ident": "", "username": "alex", "password": "x"}]), b"already exists"),
        (consumer_form("bob", [{"ident": "", "username": "bo:b", "password": "x"}]), b"RFC 7617"),
        (consumer_form("bob", [{"ident": "", "username": "bob", "password": ""}]), b"needs a password"),
        (consumer_form("bob", [], labels='{"tier": 3}'), b"labels.tier: expected a string"),
        (consumer_form("bob", [], labels='{"custom_id": "x"}'), b"Custom id field"),
    ]
    for data, message in cases:
        response = superuser.post("/admin/consumer_auth/consumer/add/", data)
        assert message in response.content, (message, response.content.decode()[:4000])
    assert list(Consumer.objects.values_list("name", flat=True)) == ["alex"]


def test_no_admin_page_shows_a_hash_or_a_password(superuser: AdminClient) -> None:
    _pages.clear()
    alex = add_alex(superuser)
    credential = alex.credentials.get()
    legacy = BasicAuthCredential.objects.create(
        consumer=alex, username="alex-old", password_hash=apr1_hash("654321")
    )
    pages = [
        "/admin/",
        "/admin/consumer_auth/",
        "/admin/consumer_auth/consumer/",
        "/admin/consumer_auth/consumer/?q=alex",
        "/admin/consumer_auth/consumer/?has_credentials=yes",
        f"/admin/consumer_auth/consumer/{alex.pk}/change/",
        "/admin/consumer_auth/basicauthcredential/",
        "/admin/consumer_auth/basicauthcredential/?password_format=apr1-md5",
        "/admin/consumer_auth/basicauthcredential/?q=alex",
        f"/admin/consumer_auth/basicauthcredential/{credential.pk}/change/",
        f"/admin/consumer_auth/basicauthcredential/{legacy.pk}/change/",
        f"/admin/consumer_auth/basicauthcredential/{credential.pk}/password/",
        f"/admin/consumer_auth/consumer/{alex.pk}/history/",
        f"/admin/consumer_auth/consumer/{alex.pk}/delete/",
        "/admin/consumer_auth/basicauthcredential/add/",
    ]
    for url in pages:
        assert superuser.get(url).status_code == 200, url
    listing = superuser.get("/admin/consumer_auth/basicauthcredential/?password_format=apr1-md5").content
    assert b"alex-old" in listing
    assert b"apr1-md5" in listing
    assert (
        b'<span class="password-format">argon2id</span>'
        in superuser.get(f"/admin/consumer_auth/consumer/{alex.pk}/change/").content
    )
    secrets = [credential.password_hash, legacy.password_hash, "123456", "654321"]
    secrets += [part for secret in secrets[:2] for part in secret.split("$") if len(part) > 8]
    assert len(_pages) > len(pages)
    for page in _pages:
        text = page.decode()
        assert "$argon2" not in text
        assert "$apr1$" not in text
        for secret in secrets:
            assert secret not in text


def test_the_set_password_action_opens_the_page_for_one_credential(superuser: AdminClient) -> None:
    alex = add_alex(superuser)
    credential = alex.credentials.get()
    other = BasicAuthCredential(consumer=alex, username="alex2")
    other.set_password("x")
    other.save()
    url = "/admin/consumer_auth/basicauthcredential/"
    one = superuser.client.post(url, {"action": "set_password", "_selected_action": [str(credential.pk)]})
    assert one.status_code == 302
    assert one["Location"] == f"{url}{credential.pk}/password/"
    two = superuser.post(
        url, {"action": "set_password", "_selected_action": [str(credential.pk), str(other.pk)]}
    )
    assert b"Select exactly one credential" in two.content


def test_a_staff_user_without_permissions_sees_nothing(site: str) -> None:
    alex = Consumer.objects.create(name="alex")
    credential = BasicAuthCredential(consumer=alex, username="alex")
    credential.set_password("123456")
    credential.save()
    nobody = AdminClient(_user("staff"))
    assert b"Consumer auth" not in nobody.get("/admin/").content
    for url in (
        "/admin/consumer_auth/consumer/",
        f"/admin/consumer_auth/consumer/{alex.pk}/change/",
        "/admin/consumer_auth/basicauthcredential/",
        f"/admin/consumer_auth/basicauthcredential/{credential.pk}/password/",
    ):
        assert nobody.get(url).status_code == 403, url
    refused = nobody.client.post(
        f"/admin/consumer_auth/basicauthcredential/{credential.pk}/password/",
        {"password1": "taken", "password2": "taken"},
    )
    assert refused.status_code == 403
    viewer = AdminClient(_user("viewer", perms=("view_consumer", "view_basicauthcredential")))
    assert viewer.get("/admin/consumer_auth/consumer/").status_code == 200
    assert viewer.get("/admin/consumer_auth/consumer/add/").status_code == 403
    assert (
        viewer.get(f"/admin/consumer_auth/basicauthcredential/{credential.pk}/password/").status_code == 403
    )
    credential.refresh_from_db()
    assert BasicAuthCredential.objects.get().password_hash == credential.password_hash


# -- another process follows the same database ---------------------------------------------------------


def database_settings(alias: str) -> dict[str, Any]:
    if alias == "postgres":
        return dict(POSTGRES_SETTINGS)
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(connections["default"].settings_dict["NAME"])}


class GatewayProcess:
    """``django_gateway_site.py`` in a process of its own, following the store every 0.3 s."""

    def __init__(self, database: dict[str, Any]) -> None:
        self.process = Process(
            [sys.executable, str(HERE / "django_gateway_site.py")],
            env={"CONSUMER_AUTH_TEST_DATABASE": json.dumps(database), "CONSUMER_AUTH_TEST_POLL": "0.3"},
        )
        self.port = int(self.process.wait_for(r"listening on (\d+)", self.process.stdout).group(1))

    def answer(self, authorization: str | None) -> tuple[int, bytes]:
        reply = request(
            self.port, "GET", "/json", [("Authorization", authorization)] if authorization else []
        )
        return reply.status, reply.body

    def stop(self) -> None:
        self.process.terminate()


@pytest.fixture
def other_process(site: str) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(database_settings(site))
    try:
        yield gateway
    finally:
        gateway.stop()


def test_another_process_follows_every_admin_change(
    superuser: AdminClient, other_process: GatewayProcess
) -> None:
    assert other_process.answer(ALEX) == MISSING_CONSUMER
    alex = add_alex(superuser)
    eventually(lambda: other_process.answer(ALEX), OK_ALEX)
    credential = alex.credentials.get()
    superuser.post(
        f"/admin/consumer_auth/basicauthcredential/{credential.pk}/password/",
        {"password1": "rotated", "password2": "rotated"},
    )
    eventually(lambda: other_process.answer(ALEX), PASSWORD_IS_ERROR)
    assert other_process.answer(basic("alex", "rotated")) == OK_ALEX
    superuser.post(f"/admin/consumer_auth/basicauthcredential/{credential.pk}/delete/", {"post": "yes"})
    eventually(lambda: other_process.answer(basic("alex", "rotated")), MISSING_CONSUMER)
    jack = Consumer.objects.create(name="jack")
    login = BasicAuthCredential(consumer=jack, username="jack")
    login.set_password("654321")
    login.save()
    eventually(lambda: other_process.answer(basic("jack", "654321"))[0], 200)
    superuser.post(f"/admin/consumer_auth/consumer/{jack.pk}/delete/", {"post": "yes"})
    eventually(lambda: other_process.answer(basic("jack", "654321")), MISSING_CONSUMER)
    assert other_process.answer(basic("who", "x")) == MISSING_CONSUMER


class CuttableProxy:
    """A TCP relay to PostgreSQL that the test can cut (every connection reset, new ones refused)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cut = threading.Event()
        self.stopped = False
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut_off(self) -> None:
        self.cut.set()
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self.cut.clear()

    def close(self) -> None:
        self.stopped = True
        self.cut_off()
        self.listener.close()


@pytest.mark.parametrize("consumer_db", ["postgresql"], indirect=True)
def test_the_other_process_rides_out_an_unreachable_database(superuser: AdminClient, site: str) -> None:
    add_alex(superuser)
    proxy = CuttableProxy(POSTGRES_SETTINGS["HOST"], int(POSTGRES_SETTINGS["PORT"]))
    gateway = GatewayProcess({**POSTGRES_SETTINGS, "PORT": str(proxy.port)})
    try:
        assert gateway.answer(ALEX) == OK_ALEX
        proxy.cut_off()
        gateway.process.wait_for("cannot read the store", gateway.process.stderr, timeout=DEADLINE)
        for _ in range(5):
            assert gateway.answer(ALEX) == OK_ALEX  # from its snapshot
        jack = Consumer.objects.create(name="jack")  # made while that process cannot see the database
        login = BasicAuthCredential(consumer=jack, username="jack")
        login.set_password("654321")
        login.save()
        assert gateway.answer(basic("jack", "654321")) == INVALID_USER
        proxy.restore()
        gateway.process.wait_for("the store answers again", gateway.process.stderr, timeout=DEADLINE)
        eventually(lambda: gateway.answer(basic("jack", "654321"))[0], 200)
        assert gateway.answer(ALEX) == OK_ALEX
        logged = "\n".join(gateway.process.stderr)
        assert logged.count("cannot read the store") == 1  # once per outage, not once per retry
        assert "654321" not in logged
        assert "$argon2" not in logged
    finally:
        gateway.stop()
        proxy.close()


# -- the store on its own ------------------------------------------------------------------------------


def test_two_stores_see_a_change_through_the_revision(consumer_db: str) -> None:  # noqa: F811
    one, two = DjangoStore(), DjangoStore()
    try:
        before = one.revision()
        assert two.revision() == before
        assert one.load().consumers == ()
        Consumer.objects.create(name="alex", custom_id="c-1", labels={"team": "a"})
        assert one.revision() != before
        assert one.revision() == two.revision()
        (alex,) = two.load().consumers
        assert (alex.username, alex.custom_id, dict(alex.labels)) == (
            "alex",
            "c-1",
            {"team": "a", "custom_id": "c-1"},
        )
    finally:
        one.close()
        two.close()


def test_a_flushed_table_is_a_new_revision(sqlite_db: str) -> None:  # noqa: F811
    store = DjangoStore()
    Consumer.objects.create(name="alex")
    seen = store.revision()
    Consumer.objects.all().delete()
    from consumer_auth.contrib.django.models import Revision

    Revision.objects.all().delete()  # as manage.py flush does
    Consumer.objects.create(name="alex")
    now = store.revision()
    assert isinstance(now, tuple)
    assert isinstance(seen, tuple)
    assert now[1] == seen[1]  # the counter starts again...
    assert now != seen  # ...under a new epoch
    store.close()


@contextmanager
def unmigrated_database(tmp_path: Path) -> Iterator[str]:
    """A database alias ``empty``: a SQLite file without the tables (``migrate`` never ran)."""
    connections.settings["empty"] = {**connections.settings["default"], "NAME": str(tmp_path / "e.sqlite3")}
    try:
        yield "empty"
    finally:
        connections["empty"].close()
        del connections["empty"]  # the next test's "empty" is another file: no connection of this one
        del connections.settings["empty"]


def test_missing_tables_say_run_migrate(tmp_path: Path) -> None:
    with unmigrated_database(tmp_path) as alias:
        store = DjangoStore(database=alias)
        with pytest.raises(StoreError, match="run manage.py migrate"):
            store.revision()
        store.close()


def test_a_database_from_before_groups_says_migrate_then_keeps_its_consumers(tmp_path: Path) -> None:
    """Migration 0002 adds the groups to a database whose consumers were made before them."""
    with unmigrated_database(tmp_path) as alias:
        call_command("migrate", "consumer_auth", "0001", database=alias, verbosity=0)
        with connections[alias].cursor() as cursor:
            cursor.execute(
                'INSERT INTO consumer_auth_consumer (name, custom_id, labels, "desc", created, modified) '
                "VALUES ('alex', '', '{}', '', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        store = DjangoStore(database=alias)
        with pytest.raises(StoreError, match="run manage.py migrate"):
            store.load()  # the consumers are there, the groups' table is not
        call_command("migrate", "consumer_auth", database=alias, verbosity=0)
        snapshot = store.load()
        assert [(c.username, c.group_id) for c in snapshot.consumers] == [("alex", None)]
        free = ConsumerGroup.objects.using(alias).create(ident="free")
        Consumer.objects.using(alias).filter(name="alex").update(group=free)
        assert [c.group_id for c in store.load().consumers] == ["free"]
        store.close()


# -- import and export ---------------------------------------------------------------------------------


def test_import_export_round_trip(sqlite_db: str, tmp_path: Path) -> None:  # noqa: F811
    source = tmp_path / "consumers.yaml"
    source.write_text(
        "consumers:\n"
        "  - username: alex\n"
        "    labels: {custom_id: c-42, team: billing}\n"
        "    plugins: {basic-auth: {username: alex, password: '123456'}}\n"
        "  - username: jack\n"
        "    desc: two logins\n"
        "    credentials:\n"
        "      - {id: jack-1, plugins: {basic-auth: {username: jack, password: '654321'}}}\n"
        f"      - {{id: jack-2, plugins: {{basic-auth: {{username: jack2019, password_hash: '{apr1_hash('x')}'}}}}}}\n"
        "routes: [{uri: /json, plugins: {basic-auth: {}}}]\n"
    )
    out, err = run_command("consumer_auth_import", str(source))
    assert out == "imported 2 consumers (2 created, 0 updated)\n"
    assert err == "not imported (set them in CONSUMER_AUTH): routes\n"
    alex = BasicAuthCredential.objects.get(username="alex")
    assert alex.password_hash.startswith("$argon2id$")
    exported, _ = run_command("consumer_auth_export", "--format", "json")
    document = json.loads(exported)
    assert [c["username"] for c in document["consumers"]] == ["alex", "jack"]
    assert document["consumers"][0]["labels"] == {"custom_id": "c-42", "team": "billing"}
    assert [c.get("id") for c in document["consumers"][1]["credentials"]] == ["jack-1", "jack-2"]

    # the export imports back to the same content, and the gateway reads it the same
    again = tmp_path / "again.json"
    again.write_text(exported)
    before = DjangoStore().load()
    assert (
        run_command("consumer_auth_import", str(again))[0] == "imported 2 consumers (0 created, 2 updated)\n"
    )
    assert json.loads(run_command("consumer_auth_export", "--format", "json")[0]) == document
    after = DjangoStore().load()
    assert [repr(c) for c in after.consumers] == [repr(c) for c in before.consumers]
    yaml_out, _ = run_command("consumer_auth_export")
    assert yaml_out.startswith("consumers:\n- username: alex\n")


def test_import_export_with_consumer_groups(sqlite_db: str, tmp_path: Path) -> None:  # noqa: F811
    source = tmp_path / "consumers.yaml"
    source.write_text(
        "consumer_groups:\n"
        "  - {id: free, desc: the free tier, plugins: {consumer-restriction: {blacklist: [mallory]}}}\n"
        "consumers:\n"
        "  - {username: alex, group_id: free, plugins: {basic-auth: {username: alex, password: '123456'}}}\n"
        "  - {username: jack, plugins: {basic-auth: {username: jack, password: '654321'}}}\n"
    )
    out, err = run_command("consumer_auth_import", str(source))
    assert out == "imported 2 consumers (2 created, 0 updated)\nand 1 consumer groups (created or replaced)\n"
    assert err == ""
    assert Consumer.objects.get(name="alex").group == ConsumerGroup.objects.get(ident="free")
    document = json.loads(run_command("consumer_auth_export", "--format", "json")[0])
    assert document["consumer_groups"] == [
        {
            "id": "free",
            "desc": "the free tier",
            "plugins": {"consumer-restriction": {"blacklist": ["mallory"]}},
        }
    ]
    assert [c.get("group_id") for c in document["consumers"]] == ["free", None]
    snapshot = DjangoStore().load()
    assert [(c.username, c.group_id) for c in snapshot.consumers] == [("alex", "free"), ("jack", None)]

    dangling = tmp_path / "dangling.yaml"
    dangling.write_text("consumers: [{username: bob, group_id: gold}]\n")
    with pytest.raises(
        CommandError, match=r"dangling.yaml: consumers\[0\]\.group_id: no consumer group with id 'gold'"
    ):
        run_command("consumer_auth_import", str(dangling))
    assert not Consumer.objects.filter(name="bob").exists()


def test_import_htpasswd_and_refusals(sqlite_db: str, tmp_path: Path) -> None:  # noqa: F811
    users = tmp_path / "users.htpasswd"
    users.write_text(f"alex:{apr1_hash('123456')}\nann@example.com:{apr1_hash('pw')}\n")
    assert (
        run_command("consumer_auth_import", str(users))[0] == "imported 2 consumers (2 created, 0 updated)\n"
    )
    assert sorted(Consumer.objects.values_list("name", flat=True)) == ["alex", "ann_example_com"]
    assert BasicAuthCredential.objects.get(username="ann@example.com").password_format == "apr1-md5"
    store = DjangoStore()
    assert {c.username for c in store.load().consumers} == {"alex", "ann_example_com"}
    store.close()

    bad = tmp_path / "bad.yaml"
    bad.write_text("consumers: [{username: bob, plugins: {basic-auth: {username: bob, password: ''}}}]\n")
    with pytest.raises(CommandError, match=r"bad\.yaml: consumers\[0\]\.plugins\.basic-auth\.password"):
        run_command("consumer_auth_import", str(bad))
    taken = tmp_path / "taken.yaml"
    taken.write_text("consumers: [{username: bob, plugins: {basic-auth: {username: alex, password: x}}}]\n")
    with pytest.raises(CommandError, match="already another consumer's"):
        run_command("consumer_auth_import", str(taken))
    assert not Consumer.objects.filter(name="bob").exists()  # all or nothing
    broken = tmp_path / "broken.htpasswd"
    broken.write_text("carl:plaintext\n")
    with pytest.raises(CommandError, match=r"broken\.htpasswd:1: user 'carl'"):
        run_command("consumer_auth_import", str(broken))


def run_command(*args: str) -> tuple[str, str]:
    import io

    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


# -- system checks -------------------------------------------------------------------------------------


def ids(**overrides: Any) -> list[str]:
    with override_settings(**overrides):
        return [message.id or "" for message in check_settings()]


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        pytest.param(store_setting(2), [], id="good"),
        pytest.param({**store_setting(2), "store": "django"}, [], id="shorthand"),
        pytest.param({**store_setting(2), "store": "nothing"}, ["consumer_auth.E010"], id="unknown-type"),
        pytest.param(
            {**store_setting(2), "store": {"type": "django", "poll": 1}},
            ["consumer_auth.E010"],
            id="unknown-key",
        ),
        pytest.param(
            {**store_setting(2), "store": {"type": "django", "poll_interval": 0}},
            ["consumer_auth.E010"],
            id="poll-zero",
        ),
        pytest.param(
            {**store_setting(2), "store": {"type": "django", "database": "nope"}},
            ["consumer_auth.E010"],
            id="no-such-database",
        ),
        pytest.param(
            {**store_setting(2), "store": {"type": "django", "rehash": "yes"}},
            ["consumer_auth.E010"],
            id="rehash-not-bool",
        ),
        pytest.param(
            {**store_setting(2), "consumers": [{"username": "alex"}]},
            ["consumer_auth.E010"],
            id="consumers-too",
        ),
        pytest.param(
            {**store_setting(2), "consumer_groups": [{"id": "free"}]},
            ["consumer_auth.E010"],
            id="consumer-groups-too",
        ),
        pytest.param(
            {**store_setting(2), "routes": [{"uri": "json"}]}, ["consumer_auth.E003"], id="bad-route"
        ),
        pytest.param({"store": "django"}, ["consumer_auth.E004"], id="no-routes"),
    ],
)
def test_store_setting_check_ids(setting: dict[str, Any], expected: list[str]) -> None:
    assert ids(CONSUMER_AUTH=setting) == expected


def test_store_check_messages_name_the_place() -> None:
    with override_settings(
        CONSUMER_AUTH={**store_setting(2), "store": {"type": "django", "poll_interval": -1}}
    ):
        (message,) = check_settings()
    assert message.msg == "CONSUMER_AUTH.store.poll_interval: expected a positive number, got -1"


def test_database_check_e011(sqlite_db: str, tmp_path: Path) -> None:  # noqa: F811
    with override_settings(CONSUMER_AUTH=store_setting(2)):
        assert check_database(databases=["default"]) == []
        assert [
            m.id for m in run_checks(databases=["default"]) if (m.id or "").startswith("consumer_auth.")
        ] == []
    with (
        unmigrated_database(tmp_path) as alias,
        override_settings(CONSUMER_AUTH={**store_setting(2), "store": {"type": "django", "database": alias}}),
    ):
        assert check_database(databases=["default"]) == []  # not asked about that database
        assert check_database(databases=[alias]) == []  # migrate runs these checks before it migrates
    Consumer.objects.create(name="alex")
    BasicAuthCredential.objects.create(
        consumer=Consumer.objects.get(), username="alex", password_hash="$argon2id$broken"
    )
    with override_settings(CONSUMER_AUTH=store_setting(2)):
        (message,) = check_database(databases=["default"])
    assert message.id == "consumer_auth.E011"
    assert "consumers/alex/credentials/" in message.msg
    assert "broken" not in message.msg


def test_a_gateway_refuses_to_start_without_its_tables(tmp_path: Path) -> None:
    with (
        unmigrated_database(tmp_path) as alias,
        override_settings(CONSUMER_AUTH={**store_setting(2), "store": {"type": "django", "database": alias}}),
        pytest.raises(StoreError, match="run manage.py migrate"),
    ):
        conf.gateway  # noqa: B018


def test_a_gateway_first_built_by_an_async_request(site: str) -> None:
    import asyncio

    from django.test import AsyncClient

    alex = Consumer.objects.create(name="alex")
    login = BasicAuthCredential(consumer=alex, username="alex")
    login.set_password("123456")
    login.save()
    conf.reset()  # the next request builds the gateway, on the event loop: the store reads off it
    response = asyncio.run(AsyncClient().get("/json", headers={"Authorization": ALEX}))
    assert (response.status_code, response.content) == OK_ALEX


def test_a_store_url_in_the_setting(tmp_path: Path) -> None:
    from consumer_auth.store import SQLStore

    url = f"sqlite:///{tmp_path / 'consumers.db'}"
    sql = SQLStore(url)
    sql.put_resource(
        "consumers", "alex", {"plugins": {"basic-auth": {"username": "alex", "password": "123456"}}}
    )
    sql.close()
    setting = {**store_setting(2), "store": {"url": url, "poll_interval": 0.2}}
    with override_settings(ROOT_URLCONF=__name__, CONSUMER_AUTH=setting):
        try:
            assert ids(CONSUMER_AUTH=setting) == []
            assert gateway_answer(ALEX) == OK_ALEX
        finally:
            conf.reset()
    assert ids(CONSUMER_AUTH={**store_setting(2), "store": "ftp://nowhere"}) == ["consumer_auth.E010"]


def test_import_toml(sqlite_db: str, tmp_path: Path) -> None:  # noqa: F811
    source = tmp_path / "consumers.toml"
    source.write_text(
        '[[consumers]]\nusername = "alex"\n[consumers.plugins.basic-auth]\nusername = "alex"\npassword = "123456"\n'
    )
    assert run_command("consumer_auth_import", str(source), "--dry-run")[0].startswith(
        "1 consumers are valid"
    )
    assert not Consumer.objects.exists()
    assert (
        run_command("consumer_auth_import", str(source))[0] == "imported 1 consumers (1 created, 0 updated)\n"
    )
    store = DjangoStore()
    (alex,) = store.load().consumers
    store.close()
    assert alex.credentials[0].verifier.verify("123456")


def test_an_imported_hash_becomes_argon2id_at_the_first_login(site: str) -> None:
    alex = Consumer.objects.create(name="alex")
    BasicAuthCredential.objects.create(consumer=alex, username="alex", password_hash=apr1_hash("123456"))
    assert gateway_answer(ALEX) == OK_ALEX
    stored = lambda: BasicAuthCredential.objects.get().password_format  # noqa: E731
    eventually(stored, "argon2id")  # saved by a thread of its own, after the answer
    assert BasicAuthCredential.objects.get().password_hash.startswith("$argon2id$")
    eventually(lambda: gateway_answer(ALEX), OK_ALEX)
    assert gateway_answer(basic("alex", "wrong")) == PASSWORD_IS_ERROR
    with override_settings(CONSUMER_AUTH={**store_setting(60), "store": {"type": "django", "rehash": False}}):
        BasicAuthCredential.objects.update(password_hash=apr1_hash("123456"))
        assert gateway_answer(ALEX) == OK_ALEX
        assert conf.gateway.on_rehash is None  # nothing will save a new hash
        assert BasicAuthCredential.objects.get().password_format == "apr1-md5"
        conf.reset()
