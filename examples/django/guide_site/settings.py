"""Settings of the example site: the smallest Django project with consumer_auth set up."""

from __future__ import annotations

from typing import Any

SECRET_KEY = "example-only-not-secret"  # a real project reads it from the environment
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = ["consumer_auth.contrib.django"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "consumer_auth.contrib.django.middleware.ConsumerAuthMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "guide_site.urls"
WSGI_APPLICATION = "guide_site.wsgi.application"
DATABASES: dict[str, Any] = {}
USE_TZ = True

# The guide's consumer and route, inline (a path to a YAML, JSON or TOML file works too).
CONSUMER_AUTH: dict[str, Any] = {
    "consumers": [
        {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}},
    ],
    # Django serves /v1/json itself; paths without a route (/v1/whoami) reach it too.
    "services": [{"id": "basic-auth-app", "path_prefix": "/v1", "strip_path_prefix": False}],
    "routes": [
        {
            "id": "json",
            "service_id": "basic-auth-app",
            "uri": "/json",
            "methods": ["GET", "HEAD"],  # HEAD: implied by GET with "unmatched: pass"; listed to say so
            "plugins": {"basic-auth": {"hide_credentials": False}},
        }
    ],
    "unmatched": "pass",
}
