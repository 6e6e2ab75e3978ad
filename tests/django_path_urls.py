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
        response = JsonResponse(
            {
                "view": name,
                "consumer": consumer.username if consumer is not None else None,
                "authenticated": bool(consumer is not None and consumer.is_authenticated),
            }
        )
        response["X-View"] = name  # also on HEAD (the differential tests read it)
        response["X-Seen-Consumer"] = consumer.username if consumer is not None else "-"
        return response

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
    path("v1/json", _view("json")),
    path("v1/pub/<path:rest>", _view("pub")),
    path("v1/about", _view("about")),
    path("json", _view("mounted-json")),  # the view of service /v1 (stripped) + route json
    path("public/", _view("public")),
]
