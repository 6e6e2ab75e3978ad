"""Views of the example site."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

from consumer_auth.contrib.django.decorators import consumer_required
from consumer_auth.contrib.django.middleware import get_consumer

SLIDESHOW: dict[str, Any] = {
    "slideshow": {
        "author": "Yours Truly",
        "date": "date of publication",
        "slides": [
            {"title": "Wake up to WonderWidgets!", "type": "all"},
            {
                "items": ["Why <em>WonderWidgets</em> are great", "Who <em>buys</em> WonderWidgets"],
                "title": "Overview",
                "type": "all",
            },
        ],
        "title": "Sample Slide Show",
    }
}


def json_document(request: HttpRequest) -> JsonResponse:
    """The guide's route: the middleware lets only consumers reach this view."""
    return JsonResponse(SLIDESHOW)


@consumer_required
async def whoami(request: HttpRequest) -> JsonResponse:
    """A view guarded by itself (no gateway route covers it); async views work as sync ones do."""
    consumer = get_consumer(request)
    return JsonResponse({"consumer": consumer.username if consumer else None})
