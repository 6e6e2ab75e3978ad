"""The Django URLconf of the conformance modes: one catch-all view echoing the request."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import re_path

from consumer_auth.contrib.django.middleware import get_consumer
from support import echo_document


def echo(request: HttpRequest) -> HttpResponse:
    """Describe the request as the plain echo apps do."""
    script = request.path[: len(request.path) - len(request.path_info)]
    body = echo_document(
        request.method or "GET",
        request.path_info,
        script,
        request.META.get("QUERY_STRING", ""),
        request.headers.items(),
        get_consumer(request),
    )
    return HttpResponse(body, content_type="application/json")


urlpatterns = [re_path(r"", echo)]
