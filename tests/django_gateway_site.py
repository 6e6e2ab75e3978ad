"""A Django site whose gateway follows the ``"django"`` store, served on 127.0.0.1:0 (a process of its own).

Run as ``python tests/django_gateway_site.py``; the database is the JSON of a ``DATABASES`` entry in
``CONSUMER_AUTH_TEST_DATABASE`` and the revision interval is ``CONSUMER_AUTH_TEST_POLL`` seconds. Prints
``listening on PORT`` once it serves; the store's log goes to standard error.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import django
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path

sys.path.insert(0, str(Path(__file__).resolve().parent))

settings.configure(
    DEBUG=False,
    SECRET_KEY="consumer-auth-tests",
    ALLOWED_HOSTS=["*"],
    INSTALLED_APPS=["consumer_auth.contrib.django"],
    MIDDLEWARE=["consumer_auth.contrib.django.middleware.ConsumerAuthMiddleware"],
    ROOT_URLCONF=__name__,
    DATABASES={"default": json.loads(os.environ["CONSUMER_AUTH_TEST_DATABASE"])},
    CONSUMER_AUTH={
        "store": {"type": "django", "poll_interval": float(os.environ.get("CONSUMER_AUTH_TEST_POLL", "0.3"))},
        "routes": [{"uri": "/json", "plugins": {"basic-auth": {}}}],
    },
    USE_TZ=True,
)
django.setup()


def whoami(request: HttpRequest) -> JsonResponse:
    consumer = getattr(request, "consumer", None)
    return JsonResponse({"consumer": consumer.username if consumer else None})


urlpatterns = [path("json", whoami)]


class QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def main() -> None:
    from django.core.handlers.wsgi import WSGIHandler

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
    handler: Any = WSGIHandler()
    server = make_server("127.0.0.1", 0, handler, handler_class=QuietHandler)
    print(f"listening on {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
