"""FastAPI integration: the gateway as middleware, consumer dependencies, and the OpenAPI security scheme.

::

    from typing import Annotated
    from fastapi import Depends, FastAPI
    from consumer_auth import Consumer
    from consumer_auth.contrib.fastapi import install, require_consumer

    app = FastAPI()
    install(app, "gateway.yaml")     # or a configuration mapping, or a Gateway

    @app.get("/v1/json")
    async def json(consumer: Annotated[Consumer, Depends(require_consumer)]) -> dict[str, str]:
        return {"consumer": consumer.username}

``require_consumer`` (or ``RequireConsumer(consumers=[...])``) is an HTTP Basic security scheme: ``/docs``
shows the lock on the endpoints that use it, and its "Authorize" button sends the credentials. It returns
the consumer a gateway route already authenticated, or authenticates the request itself with the
gateway's consumers and profile, answering failures with the gateway's exact bytes. ``request.user`` and
``request.auth`` follow Starlette's conventions (see :mod:`consumer_auth.contrib.starlette`).
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi.openapi.models import HTTPBase
from fastapi.security.base import SecurityBase
from starlette.requests import HTTPConnection

from consumer_auth.errors import ConfigError
from consumer_auth.gateway import Gateway, Guard
from consumer_auth.sansio.consumers import Consumer
from consumer_auth.sansio.plugins import BasicAuthPlugin, ConsumerRestrictionPlugin, Plugin

from .starlette import (
    GATEWAY_KEY,
    ConsumerAuthMiddleware,
    Rejected,
    authorize,
    gateway_of,
    get_consumer,
    install,
    rejected_response,
)

__all__ = [
    "GATEWAY_KEY",
    "SCHEME_NAME",
    "ConsumerAuthMiddleware",
    "Rejected",
    "RequireConsumer",
    "current_consumer",
    "install",
    "rejected_response",
    "require_consumer",
]

SCHEME_NAME = "basic-auth"
"""The name of the security scheme in the OpenAPI document (``components.securitySchemes``)."""


class RequireConsumer(SecurityBase):
    """A dependency that returns the request's consumer, or answers 401/403 as the gateway would.

    It is an OpenAPI security scheme (``{"type": "http", "scheme": "basic"}``), so the endpoints that
    depend on it carry the lock in ``/docs``.

    Args:
        consumers: The names of the consumers allowed (a ``consumer-restriction`` whitelist); any
            consumer when omitted.
        realm: The ``WWW-Authenticate`` realm (default: the profile's).
        scheme_name: The scheme's name in the OpenAPI document.
        description: The scheme's description in the OpenAPI document.

    Raises:
        ConfigError: ``consumers`` or ``realm`` is invalid.

    Example::

        admin_only = RequireConsumer(consumers=["alex"])

        @app.get("/v1/admin")
        async def admin(consumer: Annotated[Consumer, Depends(admin_only)]) -> dict[str, str]: ...
    """

    def __init__(
        self,
        *,
        consumers: Iterable[str] | None = None,
        realm: str | None = None,
        scheme_name: str = SCHEME_NAME,
        description: str | None = "HTTP Basic credentials of a consumer.",
    ) -> None:
        self.model = HTTPBase(scheme="basic", description=description)
        self.scheme_name = scheme_name
        plugins: tuple[Plugin, ...] = (BasicAuthPlugin(realm=realm),)
        if consumers is not None:
            try:
                plugins += (ConsumerRestrictionPlugin(whitelist=tuple(consumers)),)
            except ConfigError as error:
                raise ConfigError("consumers", error.reason) from None
        self._plugins = plugins
        self._compiled: tuple[Gateway, Guard] | None = None

    def _guard(self, gateway: Gateway) -> Guard:
        compiled = self._compiled
        if compiled is None or compiled[0] is not gateway:
            compiled = self._compiled = (gateway, gateway.guard(*self._plugins))
        return compiled[1]

    async def __call__(self, connection: HTTPConnection) -> Consumer:
        """The request's consumer.

        Raises:
            Rejected: with the gateway's answer (handled by the handler :func:`install` registers).
            RuntimeError: the middleware is not installed.
        """
        return await authorize(connection, self._guard(gateway_of(connection)))


require_consumer = RequireConsumer()
"""The dependency for "any consumer": ``Depends(require_consumer)`` returns a :class:`~consumer_auth.Consumer`."""


def current_consumer(connection: HTTPConnection) -> Consumer | None:
    """A dependency returning the consumer a gateway route or a guard authenticated, or ``None``.

    It authenticates nothing itself and adds no security scheme to the OpenAPI document; use
    :data:`require_consumer` to require one.
    """
    return get_consumer(connection)
