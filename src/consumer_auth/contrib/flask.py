"""Flask integration: the :class:`ConsumerAuth` extension, ``current_consumer`` and per-view guards.

Configure the gateway in ``app.config["CONSUMER_AUTH"]`` (a mapping of the configuration schema, the path
of a YAML, JSON or TOML file, or a :class:`~consumer_auth.Gateway`), then set the extension up::

    from consumer_auth.contrib.flask import ConsumerAuth, current_consumer

    app.config["CONSUMER_AUTH"] = "gateway.yaml"
    auth = ConsumerAuth(app)            # or: auth = ConsumerAuth(); auth.init_app(app)

    @app.get("/v1/whoami")
    @auth.required                      # any consumer; or @auth.required(consumers=["alex"])
    def whoami():
        return {"consumer": current_consumer.username}

The gateway's routes guard the app exactly as ``gateway.wsgi(app.wsgi_app)`` does (same answers, same
``SCRIPT_NAME`` mounting of a stripped service prefix); ``@auth.required`` guards one view with the
gateway's consumers and profile. Nothing here decides anything itself: the core does.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast, overload

from flask import Flask, current_app, request
from flask.typing import ResponseReturnValue
from werkzeug.local import LocalProxy
from werkzeug.wrappers import Response

from consumer_auth.asgi import resolve
from consumer_auth.consumers import Consumer
from consumer_auth.decision import Reject
from consumer_auth.errors import ConfigError
from consumer_auth.gateway import Gateway, Guard
from consumer_auth.plugins import BasicAuthPlugin, ConsumerRestrictionPlugin, Plugin
from consumer_auth.wsgi import CONSUMER_KEY, facts_from_environ

from ._settings import SETTING, load_gateway

__all__ = ["SETTING", "ConsumerAuth", "current_consumer", "get_consumer"]

EXTENSION = "consumer_auth"
"""The key of the extension's per-app state in ``app.extensions``."""

View = TypeVar("View", bound=Callable[..., Any])


@dataclass
class _AppState:
    gateway: Gateway
    guards: dict[tuple[Plugin, ...], Guard] = field(default_factory=dict)

    def guard(self, plugins: tuple[Plugin, ...]) -> Guard:
        guard = self.guards.get(plugins)
        if guard is None:
            guard = self.guards[plugins] = self.gateway.guard(*plugins)
        return guard


def get_consumer() -> Consumer | None:
    """The consumer of the current request (set by a gateway route or ``@auth.required``), or ``None``."""
    consumer: Consumer | None = request.environ.get(CONSUMER_KEY)
    return consumer


current_consumer: Consumer = LocalProxy(get_consumer)  # type: ignore[assignment]
"""The current request's consumer, as a proxy (also available in templates).

Meant for views guarded by a gateway route or ``@auth.required``, where there always is one. Elsewhere use
:func:`get_consumer`, which can return ``None`` (a proxy object is never ``None`` itself).
"""


def _response(reject: Reject) -> Response:
    response: Response = current_app.response_class(
        reject.body, status=reject.status_line, headers=list(reject.wsgi_headers)
    )
    return response


class ConsumerAuth:
    """The Flask extension: a gateway in front of the app, and per-view guards.

    Args:
        app: The app to set up now; or call :meth:`init_app` later (once per app).
        config: The gateway for every app this extension sets up, overriding ``app.config["CONSUMER_AUTH"]``:
            a configuration mapping, a file path or a :class:`~consumer_auth.Gateway`.

    Raises:
        ConfigError: from :meth:`init_app`: the setting is missing or invalid (the message names the exact
            place, e.g. ``CONSUMER_AUTH.routes[0].uri``), or it has no routes while unmatched requests are
            rejected (every request would get 404).

    Example:
        >>> app = Flask(__name__)
        >>> app.config["CONSUMER_AUTH"] = {
        ...     "consumers": [{"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}}],
        ...     "unmatched": "pass",
        ... }
        >>> auth = ConsumerAuth(app)
    """

    def __init__(self, app: Flask | None = None, *, config: object = None) -> None:
        self._config = config
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Wrap ``app.wsgi_app`` with the gateway configured for it, and register the template global.

        Raises:
            ConfigError: see the class.
            RuntimeError: the app is already set up.
        """
        if EXTENSION in app.extensions:
            raise RuntimeError("ConsumerAuth is already set up on this app")
        if self._config is not None:
            gateway = load_gateway(self._config, "config")
        else:
            gateway = load_gateway(app.config.get(SETTING), SETTING)
        app.extensions[EXTENSION] = _AppState(gateway)
        app.wsgi_app = gateway.wsgi(app.wsgi_app)  # type: ignore[method-assign]
        app.context_processor(lambda: {"current_consumer": current_consumer})

    @property
    def gateway(self) -> Gateway:
        """The current app's gateway (for run-time changes such as ``replace_consumers``)."""
        return _state().gateway

    @overload
    def required(self, view: View, /) -> View: ...

    @overload
    def required(
        self, view: None = None, /, *, consumers: Iterable[str] | None = None, realm: str | None = None
    ) -> Callable[[View], View]: ...

    def required(
        self,
        view: View | None = None,
        /,
        *,
        consumers: Iterable[str] | None = None,
        realm: str | None = None,
    ) -> View | Callable[[View], View]:
        """Guard a view: it runs only for a consumer (``consumers``: only for these ones).

        A request that a gateway route already authenticated is not authenticated again; otherwise the
        view's ``Authorization`` header is checked against the gateway's consumers, with the gateway's
        profile. Failures get the gateway's exact answers (401 ``Missing authorization in request``, ...;
        403 ``The consumer_name is forbidden.`` for a consumer not in ``consumers``). Works on sync and
        async views; slow hashes are verified off the event loop of an async view.

        Args:
            view: The view, when used as ``@auth.required`` without arguments.
            consumers: The names of the consumers allowed (a ``consumer-restriction`` whitelist).
            realm: The ``WWW-Authenticate`` realm (default: the profile's).

        Raises:
            ConfigError: ``consumers`` or ``realm`` is invalid (at decoration time).

        Example::

            @app.get("/v1/admin")
            @auth.required(consumers=["alex"])
            def admin():
                return {"consumer": current_consumer.username}
        """
        plugins: tuple[Plugin, ...] = (BasicAuthPlugin(realm=realm),)
        if consumers is not None:
            try:
                plugins += (ConsumerRestrictionPlugin(whitelist=tuple(consumers)),)
            except ConfigError as error:
                raise ConfigError("consumers", error.reason) from None

        def decorate(view: View) -> View:
            if inspect.iscoroutinefunction(view):

                @functools.wraps(view)
                async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                    environ = request.environ
                    guard = _state().guard(plugins)
                    decision = await resolve(
                        guard.decide(facts_from_environ(environ), environ.get(CONSUMER_KEY))
                    )
                    if isinstance(decision, Reject):
                        return _response(decision)
                    environ[CONSUMER_KEY] = decision.consumer
                    return await view(*args, **kwargs)

                return cast(View, guarded_async)

            @functools.wraps(view)
            def guarded(*args: Any, **kwargs: Any) -> ResponseReturnValue:
                environ = request.environ
                guard = _state().guard(plugins)
                decision = guard.decide_now(facts_from_environ(environ), environ.get(CONSUMER_KEY))
                if isinstance(decision, Reject):
                    return _response(decision)
                environ[CONSUMER_KEY] = decision.consumer
                result: ResponseReturnValue = view(*args, **kwargs)
                return result

            return cast(View, guarded)

        return decorate(view) if view is not None else decorate


def _state() -> _AppState:
    state = current_app.extensions.get(EXTENSION)
    if not isinstance(state, _AppState):
        raise RuntimeError("ConsumerAuth is not set up on this app: call ConsumerAuth(app) or init_app(app)")
    return state
