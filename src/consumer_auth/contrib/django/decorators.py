"""``consumer_required``: guard one Django view with the gateway's consumers."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast, overload

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest

from consumer_auth.asgi import resolve
from consumer_auth.decision import Reject
from consumer_auth.errors import ConfigError
from consumer_auth.gateway import Gateway, Guard
from consumer_auth.plugins import BasicAuthPlugin, ConsumerRestrictionPlugin, Plugin

from ._translate import allow_consumer, facts_from_request, response_from_reject
from .checks import warn_if_incomplete
from .conf import conf
from .middleware import get_consumer

__all__ = ["consumer_required"]

View = TypeVar("View", bound=Callable[..., Any])


@overload
def consumer_required(view: View, /) -> View: ...


@overload
def consumer_required(
    view: None = None, /, *, consumers: Iterable[str] | None = None, realm: str | None = None
) -> Callable[[View], View]: ...


def consumer_required(
    view: View | None = None,
    /,
    *,
    consumers: Iterable[str] | None = None,
    realm: str | None = None,
) -> View | Callable[[View], View]:
    """Guard a view (sync or async): it runs only for a consumer (``consumers``: only for these ones).

    A request that a gateway route already authenticated is not authenticated again; otherwise its
    ``Authorization`` header is checked against the gateway's consumers, with the gateway's profile.
    Failures get the gateway's exact answers; ``request.consumer`` is set on success. An async view's
    slow hashes are verified off the event loop.

    Args:
        view: The view, when used as ``@consumer_required`` without arguments.
        consumers: The names of the consumers allowed (a ``consumer-restriction`` whitelist).
        realm: The ``WWW-Authenticate`` realm (default: the profile's).

    Raises:
        ConfigError: ``consumers`` or ``realm`` is invalid (at decoration time).

    Example::

        @consumer_required(consumers=["alex"])
        def admin(request):
            return JsonResponse({"consumer": request.consumer.username})
    """
    plugins: tuple[Plugin, ...] = (BasicAuthPlugin(realm=realm),)
    if consumers is not None:
        try:
            plugins += (ConsumerRestrictionPlugin(whitelist=tuple(consumers)),)
        except ConfigError as error:
            raise ConfigError("consumers", error.reason) from None
    warn_if_incomplete()  # at import of the views: `manage.py check` imports them too
    compiled: list[tuple[Gateway, Guard]] = []

    def guard() -> Guard:
        gateway = conf.gateway
        if not compiled or compiled[-1][0] is not gateway:
            compiled[:] = [(gateway, gateway.guard(*plugins))]
        return compiled[-1][1]

    def decorate(view: View) -> View:
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def guarded_async(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                decision = await resolve(guard().decide(facts_from_request(request), get_consumer(request)))
                if isinstance(decision, Reject):
                    return response_from_reject(request, decision)
                allow_consumer(request, decision.consumer)
                return await view(request, *args, **kwargs)

            return cast(View, guarded_async)

        @functools.wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            decision = guard().decide_now(facts_from_request(request), get_consumer(request))
            if isinstance(decision, Reject):
                return response_from_reject(request, decision)
            allow_consumer(request, decision.consumer)
            return view(request, *args, **kwargs)

        return cast(View, guarded)

    return decorate(view) if view is not None else decorate
