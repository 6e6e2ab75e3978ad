"""A Django URLconf with the views of SPEC §8's tests: each answers its own name and the consumer it sees."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, JsonResponse
from django.urls import path

from consumer_auth.contrib.django.decorators import consumer_required
from consumer_auth.contrib.django.middleware import get_consumer


def _view(name: str) -> Callable[..., JsonResponse]:
    def view(request: HttpRequest, **kwargs: str) -> JsonResponse:
        consumer = get_consumer(request)
        return JsonResponse(
            {
                "view": name,
                "consumer": consumer.username if consumer is not None else None,
                "authenticated": bool(consumer is not None and consumer.is_authenticated),
            }
        )

    view.__name__ = name
    return view


@consumer_required
def guarded(request: HttpRequest) -> JsonResponse:
    """A view with its own guard, on a route whose gateway route lets anonymous requests through."""
    consumer = get_consumer(request)
    return JsonResponse({"view": "guarded", "consumer": consumer.username if consumer else None})


urlpatterns = [
    path("v1/admin/<path:rest>", _view("admin")),
    path("v1/admin", _view("admin")),
    path("v1/get-only", _view("get-only")),
    path("v1/anon", guarded),
    path("json", _view("json")),
    path("public/", _view("public")),
]
