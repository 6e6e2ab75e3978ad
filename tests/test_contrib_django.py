"""The Django app: middleware under the sync and async test clients, ``consumer_required``, system checks
(the parity table is in test_conformance.py, modes ``django-wsgi`` and ``django-asgi``).

Django is configured for the session by ``contrib_modes`` (imported by conftest.py).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.http import HttpRequest, JsonResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path, reverse

from consumer_auth import Gateway
from consumer_auth.contrib.django.checks import check_settings
from consumer_auth.contrib.django.conf import conf
from consumer_auth.contrib.django.decorators import consumer_required
from consumer_auth.contrib.django.middleware import ConsumerAuthMiddleware, get_consumer
from consumer_auth.passwords import Argon2Password
from support import basic, cheap_argon2

ALEX = basic("alex", "123456")
JACK = basic("jack", "654321")


class SubclassMiddleware(ConsumerAuthMiddleware):
    """A project's own subclass: the middleware check accepts it."""


def _describe(request: HttpRequest) -> dict[str, Any]:
    consumer = get_consumer(request)
    return {
        "consumer": consumer.username if consumer else None,
        "path_info": request.path_info,
        "path": request.path,
        "username_header": request.headers.get("X-Consumer-Username"),
        "authorization": request.headers.get("Authorization"),
        "reverse": reverse("described"),
        "thread": threading.current_thread().name,
    }


def described(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_describe(request))


@consumer_required
def mine(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_describe(request))


@consumer_required(consumers=["alex"], realm="staff")
async def alex_only(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_describe(request))


@consumer_required
async def mine_async(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_describe(request))


urlpatterns = [
    path("json", described, name="described"),
    path("mine", mine),
    path("mine-async", mine_async),
    path("alex-only", alex_only),
    path("hidden", mine),
    path("public", described),
]

GATEWAY: dict[str, Any] = {
    "consumers": [
        {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}},
        {"username": "jack", "plugins": {"basic-auth": {"username": "jack", "password": "654321"}}},
    ],
    "services": [{"id": "v1", "path_prefix": "/v1"}],
    "routes": [
        {"uri": "/json", "service_id": "v1", "methods": ["GET"], "plugins": {"basic-auth": {}}},
        {"uri": "/hidden", "plugins": {"basic-auth": {"hide_credentials": True}}},
    ],
    "unmatched": "pass",
}


@pytest.fixture(autouse=True)
def site() -> Any:
    with override_settings(ROOT_URLCONF=__name__, CONSUMER_AUTH=GATEWAY):
        yield


def sync_get(url: str, authorization: str | None = None) -> Any:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return Client().get(url, headers=headers)


def async_get(url: str, authorization: str | None = None) -> Any:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return asyncio.run(AsyncClient().get(url, headers=headers))


CLIENTS = [pytest.param(sync_get, id="sync-client"), pytest.param(async_get, id="async-client")]


@pytest.mark.parametrize("get", CLIENTS)
def test_middleware_answers_like_the_gateway(get: Any) -> None:
    response = get("/v1/json")
    assert response.status_code == 401
    assert response.content == b'{"message":"Missing authorization in request"}\n'
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["WWW-Authenticate"] == "Basic realm='.'"
    assert get("/v1/json", basic("alex", "x")).content == b'{"message":"Password is error"}\n'
    assert get("/v1/json", basic("who", "x")).content == b'{"message":"Invalid user key in authorization"}\n'


@pytest.mark.parametrize("get", CLIENTS)
def test_request_consumer_and_the_stripped_prefix(get: Any) -> None:
    seen = get("/v1/json", ALEX).json()
    assert seen["consumer"] == "alex"
    assert seen["username_header"] == "alex"
    assert seen["path_info"] == "/json"  # the service prefix is stripped, as APISIX strips it upstream
    assert seen["path"] == "/v1/json"
    assert seen["reverse"] == "/v1/json"  # and joins the script name, so reverse() keeps it


@pytest.mark.parametrize("get", CLIENTS)
def test_unguarded_request_has_no_consumer(get: Any) -> None:
    seen = get("/public").json()
    assert seen["consumer"] is None
    assert seen["reverse"] == "/json"


@pytest.mark.parametrize("get", CLIENTS)
def test_consumer_required(get: Any) -> None:
    for url in ("/mine", "/mine-async"):
        assert get(url, ALEX).json()["consumer"] == "alex"
        missing = get(url)
        assert missing.status_code == 401
        assert missing.content == b'{"message":"Missing authorization in request"}\n'
        assert missing["WWW-Authenticate"] == "Basic realm='.'"
    assert get("/alex-only", ALEX).json()["consumer"] == "alex"
    forbidden = get("/alex-only", JACK)
    assert forbidden.status_code == 403
    assert forbidden.content == b'{"message":"The consumer_name is forbidden."}\n'
    assert get("/alex-only")["WWW-Authenticate"] == "Basic realm='staff'"


@pytest.mark.parametrize("get", CLIENTS)
def test_consumer_required_after_a_route_that_hides_credentials(get: Any) -> None:
    seen = get("/hidden", ALEX).json()
    assert seen["consumer"] == "alex"
    assert seen["authorization"] is None


def test_slow_hashes_leave_the_event_loop_under_asgi(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    verify = Argon2Password.verify

    def recording(self: Argon2Password, password: str) -> bool:
        threads.append(threading.current_thread().name)
        return verify(self, password)

    monkeypatch.setattr(Argon2Password, "verify", recording)
    slow = {
        **GATEWAY,
        "verification_cache": {"max_entries": 0},  # every request verifies: the test watches where
        "consumers": [
            {
                "username": "alex",
                "plugins": {"basic-auth": {"username": "alex", "password_hash": cheap_argon2("123456")}},
            }
        ],
    }
    with override_settings(CONSUMER_AUTH=slow):
        assert async_get("/v1/json", ALEX).json()["consumer"] == "alex"
        assert threads[-1].startswith("consumer-auth-verify")
        assert async_get("/mine-async", ALEX).json()["consumer"] == "alex"
        assert threads[-1].startswith("consumer-auth-verify")
        assert sync_get("/v1/json", ALEX).json()["consumer"] == "alex"
        assert threads[-1] == threading.current_thread().name  # WSGI: the request's own thread


def test_settings_accept_a_file_and_a_gateway(tmp_path: Path) -> None:
    config_file = tmp_path / "gateway.yaml"
    config_file.write_text(
        "consumers: [{username: jack, plugins: {basic-auth: {username: jack, password: '654321'}}}]\n"
        "routes: [{uri: /json, plugins: {basic-auth: {}}}]\n"
    )
    with override_settings(CONSUMER_AUTH=config_file):
        assert sync_get("/json", JACK).json()["consumer"] == "jack"
        assert sync_get("/public").status_code == 404  # unmatched requests are rejected by default
    gateway = Gateway.from_dict(GATEWAY)
    with override_settings(CONSUMER_AUTH=gateway):
        assert conf.gateway is gateway


# -- system checks ------------------------------------------------------------------------------------


def check_ids(**overrides: Any) -> list[str]:
    with override_settings(**overrides):
        return [message.id or "" for message in check_settings()]


def test_checks_pass_on_a_good_configuration() -> None:
    assert check_ids() == []
    assert [m.id for m in run_checks() if (m.id or "").startswith("consumer_auth.")] == []


@pytest.mark.parametrize(
    ("overrides", "ids"),
    [
        pytest.param({"CONSUMER_AUTH": 42}, ["consumer_auth.E002"], id="E002-type"),
        pytest.param({"CONSUMER_AUTH": None}, ["consumer_auth.E002"], id="E002-none"),
        pytest.param(
            {"CONSUMER_AUTH": {"routes": [{"uri": "json"}]}}, ["consumer_auth.E003"], id="E003-invalid"
        ),
        pytest.param({"CONSUMER_AUTH": "/nonexistent/gateway.yaml"}, ["consumer_auth.E003"], id="E003-file"),
        pytest.param({"CONSUMER_AUTH": {"consumers": []}}, ["consumer_auth.E004"], id="E004-unreachable"),
        pytest.param({"MIDDLEWARE": []}, ["consumer_auth.E005"], id="E005-middleware"),
        pytest.param(
            {"MIDDLEWARE": [], "CONSUMER_AUTH": 42},
            ["consumer_auth.E005", "consumer_auth.E002"],
            id="E005-and-E002",
        ),
    ],
)
def test_check_ids(overrides: dict[str, Any], ids: list[str]) -> None:
    assert check_ids(**overrides) == ids


def test_check_e001_missing_setting() -> None:
    from django.conf import settings

    with override_settings():
        del settings.CONSUMER_AUTH
        assert [m.id for m in check_settings()] == ["consumer_auth.E001"]


def test_check_e003_names_the_place() -> None:
    bad = {"routes": [{"uri": "/x", "plugins": {"basic-auth": {"hide_credentials": "yes"}}}]}
    with override_settings(CONSUMER_AUTH=bad):
        (message,) = check_settings()
    assert (
        message.msg
        == "CONSUMER_AUTH.routes[0].plugins.basic-auth.hide_credentials: expected a boolean, got 'yes'"
    )


def test_check_e005_accepts_a_subclass() -> None:
    assert check_ids(MIDDLEWARE=[f"{__name__}.SubclassMiddleware", "no.such.Middleware"]) == []


def test_manage_py_check_fails_on_a_bad_configuration() -> None:
    with (
        override_settings(
            CONSUMER_AUTH={
                "consumers": [
                    {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": ""}}}
                ]
            }
        ),
        pytest.raises(SystemCheckError, match=r"consumer_auth\.E003"),
    ):
        call_command("check")


# -- a setup missing a piece says so, even where the system checks do not run ------------------------------


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    from consumer_auth.contrib.django import checks

    monkeypatch.setattr(checks, "_warned", set())


@pytest.mark.usefixtures("fresh_warnings")
def test_consumer_required_warns_when_the_middleware_is_missing() -> None:
    with (
        override_settings(MIDDLEWARE=[]),
        pytest.warns(
            RuntimeWarning, match=r"ConsumerAuthMiddleware is not in MIDDLEWARE: the gateway's routes"
        ),
    ):
        consumer_required(lambda request: JsonResponse({}))


@pytest.mark.usefixtures("fresh_warnings")
def test_the_middleware_warns_when_the_app_is_not_installed() -> None:
    with (
        override_settings(INSTALLED_APPS=[]),
        pytest.warns(RuntimeWarning, match=r"'consumer_auth.contrib.django' is not in INSTALLED_APPS"),
    ):
        ConsumerAuthMiddleware(lambda request: JsonResponse({}))


@pytest.mark.usefixtures("fresh_warnings")
def test_a_complete_setup_does_not_warn() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        consumer_required(lambda request: JsonResponse({}))
        ConsumerAuthMiddleware(lambda request: JsonResponse({}))
