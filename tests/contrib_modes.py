"""The framework integrations as conformance modes: Flask, Django (WSGI and ASGI) and FastAPI.

Each mode builds its framework app from ``configs.CONFIGS[name]`` the way a user configures it
(``app.config["CONSUMER_AUTH"]``, ``settings.CONSUMER_AUTH``, ``install(app, config)``), with a
catch-all view that answers the same JSON document as the plain echo apps. Requests are driven exactly
as in the plain WSGI and ASGI modes (``support.wsgi_call`` / ``support.call_asgi``), through the
framework's real handler, so every conformance row runs through every integration.

Importing this module configures Django for the whole test session (``settings.configure``), with
Django admin and a SQLite database in a temporary directory (``django_db.py`` migrates it on demand).
"""

from __future__ import annotations

import asyncio
import atexit
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import django
from django.conf import settings
from fastapi import FastAPI, Request, Response

import configs
import django_db
from consumer_auth.contrib.fastapi import install as install_fastapi
from consumer_auth.contrib.starlette import get_consumer as starlette_consumer
from support import MODES, Headers, Mode, Reply, call_asgi, echo_document, wsgi_call

ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

if not settings.configured:
    _database_dir = Path(tempfile.mkdtemp(prefix="consumer-auth-django-"))
    atexit.register(shutil.rmtree, _database_dir, ignore_errors=True)
    settings.configure(
        DEBUG=False,
        SECRET_KEY="consumer-auth-tests",
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django.contrib.staticfiles",
            "consumer_auth.contrib.django",
        ],
        STATIC_URL="/static/",
        MIDDLEWARE=["consumer_auth.contrib.django.middleware.ConsumerAuthMiddleware"],
        ROOT_URLCONF="django_echo_urls",
        CONSUMER_AUTH=configs.CONFIGS["guide"],
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(_database_dir / "db.sqlite3")},
            **django_db.POSTGRES_DATABASES,
        },
        DATABASE_ROUTERS=["django_db.ConsumerRouter"],
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
        # The admin pages run with the usual middleware; the conformance modes keep the gateway alone.
        SILENCED_SYSTEM_CHECKS=["admin.E408", "admin.E409", "admin.E410"],
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],  # the test superuser only
        USE_TZ=True,
    )
    django.setup()


def _cached(build: Callable[[str], Any]) -> Callable[[str], Any]:
    made: dict[str, Any] = {}

    def get(config: str) -> Any:
        if config not in made:
            made[config] = build(config)
        return made[config]

    return get


# -- Flask ---------------------------------------------------------------------------------------------


@_cached
def flask_echo_app(config: str) -> Any:
    """A Flask app set up with ``ConsumerAuth`` from ``app.config``, echoing every request."""
    from flask import Flask, Response, request

    from consumer_auth.contrib.flask import ConsumerAuth, get_consumer

    app = Flask(f"conformance_{config}")
    app.config["CONSUMER_AUTH"] = configs.CONFIGS[config]
    ConsumerAuth(app)

    @app.route("/", defaults={"path": ""}, methods=ALL_METHODS)
    @app.route("/<path:path>", methods=ALL_METHODS)
    def echo(path: str) -> Response:
        body = echo_document(
            request.method,
            request.path,
            request.script_root,
            request.query_string.decode("latin-1"),
            request.headers.items(),
            get_consumer(),
        )
        return Response(body, content_type="application/json")

    return app


def _flask_mode(config: str, method: str, path: str, headers: Headers) -> Reply:
    return wsgi_call(flask_echo_app(config), method, path, headers)


# -- Django --------------------------------------------------------------------------------------------


def _django_mode(handler: Any, asynchronous: bool) -> Callable[[str, str, str, Headers], Reply]:
    from django.test import override_settings

    from consumer_auth.contrib.django.conf import conf

    built: dict[str, Any] = {}

    def request(config: str, method: str, path: str, headers: Headers) -> Reply:
        with override_settings(CONSUMER_AUTH=configs.CONFIGS[config]):
            # A running site builds its gateway once; override_settings would rebuild it on every
            # request, losing state that lives across requests (brute-force failure counts).
            if config in built:
                conf._gateway = built[config]
            else:
                built[config] = conf.gateway
            if asynchronous:
                return asyncio.run(call_asgi(handler, method, path, headers))
            return wsgi_call(handler, method, path, headers)

    return request


def _django_wsgi() -> Mode:
    from django.core.handlers.wsgi import WSGIHandler

    return Mode("django-wsgi", _django_mode(WSGIHandler(), asynchronous=False))


def _django_asgi() -> Mode:
    from django.core.handlers.asgi import ASGIHandler

    return Mode("django-asgi", _django_mode(ASGIHandler(), asynchronous=True))


# -- FastAPI -------------------------------------------------------------------------------------------


@_cached
def fastapi_echo_app(config: str) -> Any:
    """A FastAPI app set up with ``install(app, config)``, echoing every request."""
    app = FastAPI(openapi_url=None)
    install_fastapi(app, configs.CONFIGS[config])

    @app.api_route("/{path:path}", methods=ALL_METHODS)
    async def echo(request: Request) -> Response:
        scope = request.scope
        root = scope.get("root_path", "")
        full = scope["path"]
        body = echo_document(
            request.method,
            full[len(root) :] if root and full.startswith(root) else full,
            root,
            scope["query_string"].decode("latin-1"),
            [(n.decode("latin-1"), v.decode("latin-1")) for n, v in scope["headers"]],
            starlette_consumer(request),
        )
        return Response(body, media_type="application/json")

    return app


def _fastapi_mode(config: str, method: str, path: str, headers: Headers) -> Reply:
    return asyncio.run(call_asgi(fastapi_echo_app(config), method, path, headers))


MODES.update(
    {
        "flask": lambda: Mode("flask", _flask_mode),
        "django-wsgi": _django_wsgi,
        "django-asgi": _django_asgi,
        "fastapi": lambda: Mode("fastapi", _fastapi_mode),
    }
)
