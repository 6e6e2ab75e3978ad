"""Settings of the example site: the guide's consumer managed in Django admin, its route in settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "example-only-not-secret"  # a real project reads it from the environment
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "consumer_auth.contrib.django",  # the consumer models, their admin pages and the "django" store
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "consumer_auth.contrib.django.middleware.ConsumerAuthMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "guide_site.urls"
WSGI_APPLICATION = "guide_site.wsgi.application"
DATABASES: dict[str, Any] = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("GUIDE_SITE_DATABASE", str(BASE_DIR / "db.sqlite3")),
    }
}
TEMPLATES = [
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
]
STATIC_URL = "/static/"
FIXTURE_DIRS = [BASE_DIR / "guide_site" / "fixtures"]  # guide_consumers.json: alex / 123456
USE_TZ = True

# The guide's route; its consumers come from Django admin ("manage.py loaddata guide_consumers" loads
# alex / 123456). Changes made in admin apply to every running process within 2 s, without a restart.
CONSUMER_AUTH: dict[str, Any] = {
    "store": "django",
    # Django serves /v1/json itself; paths without a route (/v1/whoami, /admin/) reach it too.
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
