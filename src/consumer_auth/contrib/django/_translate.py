"""Translate between a Django request and the core, under WSGI and ASGI Django alike."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import get_script_prefix, set_script_prefix

from consumer_auth.asgi import apply_allow_scope, facts_from_scope
from consumer_auth.sansio.consumers import Consumer
from consumer_auth.sansio.decision import Allow, Reject, RequestFacts
from consumer_auth.wsgi import CONSUMER_KEY, apply_allow, apply_identity, facts_from_environ


def _scope(request: HttpRequest) -> dict[str, Any] | None:
    """The ASGI scope of a request that ASGI Django made, else ``None`` (``META`` is then the environ)."""
    scope = getattr(request, "scope", None)
    return scope if isinstance(scope, dict) else None


def facts_from_request(request: HttpRequest) -> RequestFacts:
    """The request facts, read from the ASGI scope or the WSGI environ the request came from.

    Reading the scope keeps every ``Authorization`` header apart (``META`` joins repeated ones).
    """
    scope = _scope(request)
    return facts_from_scope(scope) if scope is not None else facts_from_environ(request.META)  # type: ignore[arg-type]


def apply_to_request(request: HttpRequest, facts: RequestFacts, decision: Allow) -> str | None:
    """Change the request as the decision says, before Django resolves its URL.

    Identity headers and hidden credentials go into ``META`` (and the ASGI scope); ``request.consumer``
    is set; the view sees the normalized path that was authorized, and a stripped service prefix joins
    the script name, as WSGI's ``SCRIPT_NAME`` and ASGI's ``root_path`` do.

    Returns:
        The new script prefix, when a service prefix was stripped: run the rest of the request under
        :func:`script_prefix` so that ``reverse()`` keeps it.
    """
    scope = _scope(request)
    if scope is None:
        apply_allow(request.META, facts, decision)  # META is the WSGI environ
    else:
        apply_identity(request.META, decision)
        request.scope = apply_allow_scope(scope, facts, decision)  # type: ignore[attr-defined, arg-type]
    request.consumer = decision.consumer  # type: ignore[attr-defined]
    request.__dict__.pop("headers", None)  # a cached view of META, maybe read by an earlier middleware
    prefix = decision.strip_prefix if facts.path.startswith(decision.strip_prefix) else ""
    path_info = facts.path[len(prefix) :] or "/"
    if not prefix and path_info == request.path_info:
        return None
    script = request.path[: len(request.path) - len(request.path_info)] + prefix
    request.path_info = path_info
    request.path = f"{script.rstrip('/')}/{path_info.removeprefix('/')}"
    if scope is not None:
        request.META["SCRIPT_NAME"] = script
        request.META["PATH_INFO"] = path_info
    return script if prefix else None


@contextmanager
def script_prefix(prefix: str | None) -> Iterator[None]:
    """Run a block with Django's script prefix set to ``prefix`` (when not ``None``), then restore it."""
    if prefix is None:
        yield
        return
    previous = get_script_prefix()
    set_script_prefix(prefix)
    try:
        yield
    finally:
        set_script_prefix(previous)


def allow_consumer(request: HttpRequest, consumer: Consumer | None) -> None:
    """Record the consumer a per-view guard authenticated."""
    request.consumer = consumer  # type: ignore[attr-defined]
    request.META[CONSUMER_KEY] = consumer


def response_from_reject(request: HttpRequest, reject: Reject) -> HttpResponse:
    """The rejection as a Django response: exact status, headers and body (no body for ``HEAD``)."""
    body = b"" if request.method == "HEAD" else reject.body
    return HttpResponse(body, status=reject.status, headers=dict(reject.wsgi_headers))
