"""ASGI entry point of the example site (``uvicorn guide_site.asgi:application --app-dir examples/django``)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guide_site.settings")
application = get_asgi_application()
