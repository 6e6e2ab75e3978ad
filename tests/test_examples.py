"""The runnable examples in examples/: each is imported and sent its README's curl commands."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from django.core.management import call_command
from django.test import AsyncClient, Client, override_settings

from django_db import sqlite_db  # noqa: F401 - the fixture
from support import Headers, Reply, basic, call_asgi, wsgi_call

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ALEX = [("Authorization", basic("alex", "123456"))]

# The README's curl commands, and what each must answer (SPEC §2.1, the guide's messages).
CURLS = [
    pytest.param([], 401, b'{"message":"Missing authorization in request"}\n', id="no-credentials"),
    pytest.param(ALEX, 200, None, id="alex"),
    pytest.param(
        [("Authorization", basic("wrong-user", "wrong-password"))],
        401,
        b'{"message":"Invalid user key in authorization"}\n',
        id="wrong-user",
    ),
    pytest.param(
        [("Authorization", basic("alex", "wrong-password"))],
        401,
        b'{"message":"Password is error"}\n',
        id="wrong-password",
    ),
]


def load(relative: str, name: str) -> ModuleType:
    """Import an example file as a module of its own name (examples are not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / relative)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def check_json(reply: Reply, status: int, body: bytes | None, slideshow: dict[str, Any]) -> None:
    assert reply.status == status, reply.body
    if body is not None:
        assert reply.body == body
        assert reply.headers["content-type"] == "text/plain; charset=utf-8"
    else:
        assert json.loads(reply.body) == slideshow


# -- Flask ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "status", "body"), CURLS)
def test_flask_example(headers: Headers, status: int, body: bytes | None) -> None:
    example = load("flask/app.py", "example_flask_app")
    check_json(wsgi_call(example.app, "GET", "/v1/json", headers), status, body, example.SLIDESHOW)


def test_flask_example_whoami() -> None:
    example = load("flask/app.py", "example_flask_app")
    assert json.loads(wsgi_call(example.app, "GET", "/v1/whoami", ALEX).body) == {"consumer": "alex"}
    assert wsgi_call(example.app, "GET", "/v1/whoami", []).status == 401
    assert wsgi_call(example.app, "HEAD", "/v1/json", []).status == 401


# -- FastAPI -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "status", "body"), CURLS)
def test_fastapi_example(headers: Headers, status: int, body: bytes | None) -> None:
    example = load("fastapi/main.py", "example_fastapi_main")
    reply = asyncio.run(call_asgi(example.app, "GET", "/v1/json", headers))
    check_json(reply, status, body, example.SLIDESHOW)


def test_fastapi_example_whoami_and_docs() -> None:
    example = load("fastapi/main.py", "example_fastapi_main")
    reply = asyncio.run(call_asgi(example.app, "GET", "/v1/whoami", ALEX))
    assert json.loads(reply.body) == {"consumer": "alex"}
    assert asyncio.run(call_asgi(example.app, "GET", "/v1/whoami", [])).status == 401
    assert asyncio.run(call_asgi(example.app, "GET", "/docs", [])).status == 200
    schema = json.loads(asyncio.run(call_asgi(example.app, "GET", "/openapi.json", [])).body)
    assert schema["components"]["securitySchemes"]["basic-auth"]["scheme"] == "basic"
    for route in ("/v1/json", "/v1/whoami"):
        assert schema["paths"][route]["get"]["security"] == [{"basic-auth": []}]


@pytest.mark.parametrize(("headers", "status", "body"), CURLS)
def test_fastapi_protect_example(headers: Headers, status: int, body: bytes | None) -> None:
    example = load("fastapi/protect_app.py", "example_fastapi_protect_app")
    reply = asyncio.run(call_asgi(example.application, "GET", "/v1/json", headers))
    check_json(reply, status, body, {"title": "Sample Slide Show"})
    # `app` is still the FastAPI app, unguarded: its routes were added after protect() as before it.
    assert type(example.app).__name__ == "FastAPI"
    assert asyncio.run(call_asgi(example.guarded, "GET", "/v1/json", [])).status == 401


# -- Django --------------------------------------------------------------------------------------------


GUIDE_FIXTURE = EXAMPLES / "django" / "guide_site" / "fixtures" / "guide_consumers.json"


@pytest.fixture
def guide_site(monkeypatch: pytest.MonkeyPatch, sqlite_db: str) -> Any:  # noqa: F811 - the fixture
    """The example site's settings, applied over the test session's Django configuration, with the
    example's fixture (alex / 123456) loaded into the session's database, as its README does."""
    from consumer_auth.contrib.django.conf import conf

    monkeypatch.syspath_prepend(str(EXAMPLES / "django"))
    settings = importlib.import_module("guide_site.settings")
    call_command("loaddata", str(GUIDE_FIXTURE), verbosity=0)
    names = ("ALLOWED_HOSTS", "MIDDLEWARE", "ROOT_URLCONF", "CONSUMER_AUTH")
    with override_settings(**{name: getattr(settings, name) for name in names}):
        try:
            yield importlib.import_module("guide_site.views")
        finally:
            conf.reset()  # the gateway stops following the store


@pytest.mark.parametrize(("headers", "status", "body"), CURLS)
@pytest.mark.parametrize("asynchronous", [False, True], ids=["wsgi", "asgi"])
def test_django_example(
    guide_site: Any, asynchronous: bool, headers: Headers, status: int, body: bytes | None
) -> None:
    extra = dict(headers)
    response: Any
    if asynchronous:
        response = asyncio.run(AsyncClient().get("/v1/json", headers=extra))
    else:
        response = Client().get("/v1/json", headers=extra)
    reply = Reply(response.status_code, {k.lower(): v for k, v in response.items()}, response.content)
    check_json(reply, status, body, guide_site.SLIDESHOW)


def test_django_example_whoami(guide_site: Any) -> None:
    assert Client().get("/v1/whoami", headers=dict(ALEX)).json() == {"consumer": "alex"}
    assert asyncio.run(AsyncClient().get("/v1/whoami", headers=dict(ALEX))).json() == {"consumer": "alex"}
    assert Client().get("/v1/whoami").status_code == 401


def test_django_example_readme_commands(tmp_path: Path) -> None:
    # migrate, loaddata and check --database in the example's own settings, on a database of its own
    manage = [sys.executable, str(EXAMPLES / "django" / "manage.py")]
    env = {**os.environ, "GUIDE_SITE_DATABASE": str(tmp_path / "db.sqlite3")}
    outputs = []
    for command in (
        ["migrate", "--verbosity", "0"],
        ["loaddata", "guide_consumers"],
        ["check", "--database", "default"],
        ["consumer_auth_export"],
    ):
        result = subprocess.run(
            [*manage, *command], capture_output=True, text=True, timeout=120, check=False, env=env
        )
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        outputs.append(result.stdout)
    assert "Installed 2 object(s)" in outputs[1]
    assert "System check identified no issues" in outputs[2]
    assert outputs[3].startswith("consumers:\n- username: alex\n")


def test_django_example_manage_py_check() -> None:
    # The README's first command, in the example's own settings (a process of its own).
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "django" / "manage.py"), "check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_readme_fastapi_line_is_the_checked_example_and_the_docs_line() -> None:
    readme = (EXAMPLES.parent / "README.md").read_text()
    line = next(line for line in readme.splitlines() if line.endswith("# FastAPI: serve `application`"))
    code = line.split("  #")[0]
    assert code == 'application = protect(app, consumers=[Consumer("alex", password="123456")])'
    assert code in (EXAMPLES / "fastapi" / "protect_app.py").read_text()  # type-checked by mypy --strict
    assert code in (EXAMPLES.parent / "docs" / "fastapi.md").read_text()
