"""``protect``: the two-line wrap of a whole WSGI or ASGI app."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, cast, overload

from .consumers import Consumer
from .errors import UnsupportedAppError
from .failures import FailureStore
from .gateway import Gateway
from .plugins import BasicAuthPlugin, Profile
from .plugins.brute_force import BruteForce
from .routing import Route

__all__ = ["detect_interface", "protect"]

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from .asgi import ASGIApp, ASGIGatewayMiddleware
    from .wsgi import GatewayMiddleware


def detect_interface(app: object) -> Literal["wsgi", "asgi"]:
    """Tell whether ``app`` is an ASGI app (a coroutine function or object) or a WSGI app.

    Raises:
        UnsupportedAppError: ``app`` is not callable.
    """
    if not callable(app):
        raise UnsupportedAppError(f"expected a WSGI or ASGI application, got {type(app).__name__}")
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else type(app).__call__
    if inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(app):
        return "asgi"
    return "wsgi"


@overload
def protect(
    app: ASGIApp,
    consumers: Iterable[Consumer],
    *,
    realm: str | None = None,
    hide_credentials: bool = False,
    anonymous_consumer: str | None = None,
    profile: Profile | str = Profile.CLASSIC,
    brute_force: BruteForce | Mapping[str, Any] | None = None,
    brute_force_store: FailureStore | None = None,
    trusted_proxies: Iterable[str] = (),
    interface: Literal["auto", "asgi"] = "auto",
) -> ASGIGatewayMiddleware: ...


@overload
def protect(
    app: WSGIApplication,
    consumers: Iterable[Consumer],
    *,
    realm: str | None = None,
    hide_credentials: bool = False,
    anonymous_consumer: str | None = None,
    profile: Profile | str = Profile.CLASSIC,
    brute_force: BruteForce | Mapping[str, Any] | None = None,
    brute_force_store: FailureStore | None = None,
    trusted_proxies: Iterable[str] = (),
    interface: Literal["auto", "wsgi"] = "auto",
) -> GatewayMiddleware: ...


def protect(
    app: ASGIApp | WSGIApplication,
    consumers: Iterable[Consumer],
    *,
    realm: str | None = None,
    hide_credentials: bool = False,
    anonymous_consumer: str | None = None,
    profile: Profile | str = Profile.CLASSIC,
    brute_force: BruteForce | Mapping[str, Any] | None = None,
    brute_force_store: FailureStore | None = None,
    trusted_proxies: Iterable[str] = (),
    interface: Literal["auto", "wsgi", "asgi"] = "auto",
) -> ASGIGatewayMiddleware | GatewayMiddleware:
    """Require basic-auth credentials of ``consumers`` on every path of a WSGI or ASGI app.

    Args:
        app: The application (Flask's ``app.wsgi_app``, a FastAPI app, a Django handler, ...).
        consumers: Who may call it.
        realm: The ``WWW-Authenticate`` realm (profile default when omitted).
        hide_credentials: Remove ``Authorization`` before the app sees the request.
        anonymous_consumer: Let failed requests through as this consumer instead of answering 401.
        profile: ``"classic"`` (default) or ``"apisix-3"``; see :class:`~consumer_auth.Gateway`.
        brute_force: Limits on failed logins, e.g. ``{"max_failures": 5, "window": 60, "lockout": 300}``
            (off by default); see :class:`~consumer_auth.BruteForce`.
        brute_force_store: Where failures are counted (default: this process's memory).
        trusted_proxies: Proxies (addresses or CIDR networks) whose ``X-Forwarded-For`` is believed.
        interface: ``"auto"`` detects ASGI (coroutine ``__call__``) or WSGI; force one if detection fails.

    Returns:
        The middleware wrapping ``app``: an :class:`~consumer_auth.asgi.ASGIGatewayMiddleware` for an ASGI
        app, a :class:`~consumer_auth.wsgi.GatewayMiddleware` for a WSGI one. It is a new application, not
        ``app``: keep ``app`` for its own API (FastAPI's ``@app.get``) and serve the result.

    Raises:
        UnsupportedAppError: ``app`` is not an application.
        ConfigError: a consumer or option is invalid.

    Example:
        Flask (WSGI) and FastAPI (ASGI) alike::

            app.wsgi_app = protect(app.wsgi_app, consumers=[Consumer("alex", password="123456")])
            application = protect(app, consumers=[Consumer("alex", password="123456")])  # serve this
    """
    kind = detect_interface(app) if interface == "auto" else interface
    plugin = BasicAuthPlugin(
        hide_credentials=hide_credentials,
        realm=realm,
        anonymous_consumer=anonymous_consumer,
        brute_force=brute_force,
    )
    gateway = Gateway(
        consumers=consumers,
        routes=[Route("/*", plugins=[plugin])],
        profile=profile,
        trusted_proxies=trusted_proxies,
        brute_force_store=brute_force_store,
    )
    if kind == "asgi":
        return gateway.asgi(cast("ASGIApp", app))
    return gateway.wsgi(cast("WSGIApplication", app))
