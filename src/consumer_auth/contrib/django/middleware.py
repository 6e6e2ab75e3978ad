"""``ConsumerAuthMiddleware``: the gateway in front of Django, under WSGI and ASGI alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from consumer_auth.asgi import resolve
from consumer_auth.consumers import Consumer
from consumer_auth.decision import Reject

from ._translate import apply_to_request, facts_from_request, response_from_reject, script_prefix
from .checks import warn_if_incomplete
from .conf import conf

__all__ = ["ConsumerAuthMiddleware", "get_consumer"]

GetResponse = Callable[[HttpRequest], HttpResponseBase]
AsyncGetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


def get_consumer(request: HttpRequest) -> Consumer | None:
    """``request.consumer``, typed: the authenticated (or anonymous) consumer, or ``None``."""
    consumer: Consumer | None = getattr(request, "consumer", None)
    return consumer


class ConsumerAuthMiddleware:
    """Lets a request reach Django only when the gateway of ``settings.CONSUMER_AUTH`` allows it.

    Rejections are answered here, byte for byte as the plain WSGI and ASGI middleware answer them. On
    requests that pass, ``request.consumer`` is the consumer (or ``None``), the identity headers are in
    ``request.headers``, and a stripped service prefix becomes part of the script name.

    Both sync- and async-capable: under ASGI Django it runs on the event loop and verifies slow password
    hashes in a thread pool; under WSGI it runs in the request's thread. Place it near the top of
    ``MIDDLEWARE`` (after ``SecurityMiddleware``), before anything that reads the identity headers.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse | AsyncGetResponse) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
        conf.gateway  # noqa: B018 - build it now, at start-up, not in the first request
        warn_if_incomplete(middleware=False)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.async_mode:
            return self.__acall__(request)
        facts = facts_from_request(request)
        decision = conf.gateway.decide_now(facts)
        if isinstance(decision, Reject):
            return response_from_reject(request, decision)
        with script_prefix(apply_to_request(request, facts, decision)):
            return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        facts = facts_from_request(request)
        decision = await resolve(conf.gateway.decide(facts))
        if isinstance(decision, Reject):
            return response_from_reject(request, decision)
        with script_prefix(apply_to_request(request, facts, decision)):
            return await cast(AsyncGetResponse, self.get_response)(request)
