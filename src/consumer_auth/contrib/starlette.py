"""Starlette integration: the gateway as middleware, ``request.user`` / ``request.auth``, per-endpoint guards.

::

    from consumer_auth.contrib.starlette import install

    app = Starlette(routes=[...])
    install(app, "gateway.yaml")     # or a configuration mapping, or a Gateway

After it, ``request.user`` is the :class:`~consumer_auth.Consumer` on requests a gateway route (or a
guard) authenticated, and Starlette's ``UnauthenticatedUser`` on the others; ``request.auth.scopes`` is
``["authenticated"]`` or ``[]``, so Starlette's ``@requires("authenticated")`` works. FastAPI users want
:mod:`consumer_auth.contrib.fastapi`, which adds dependencies and the OpenAPI security scheme on top.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

from starlette.authentication import UnauthenticatedUser
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.websockets import WebSocket

from consumer_auth.asgi import ASGIGatewayMiddleware, AuthScopes, facts_from_scope, resolve, send_reject
from consumer_auth.consumers import Consumer
from consumer_auth.decision import Allow, Reject, RequestFacts
from consumer_auth.gateway import Gateway, Guard
from consumer_auth.wsgi import CONSUMER_KEY

from ._settings import load_gateway

if TYPE_CHECKING:
    from asgiref.typing import HTTPScope, WebSocketScope
    from starlette.applications import Starlette
    from starlette.types import ASGIApp

__all__ = [
    "GATEWAY_KEY",
    "ConsumerAuthMiddleware",
    "Rejected",
    "authorize",
    "gateway_of",
    "get_consumer",
    "install",
    "rejected_response",
]

GATEWAY_KEY = "consumer_auth.gateway"
"""Where the middleware puts its :class:`~consumer_auth.Gateway` in the scope, for guards to find."""


class ConsumerAuthMiddleware(ASGIGatewayMiddleware):
    """ASGI middleware: the gateway in front of a Starlette (or FastAPI) app.

    Decides exactly as :meth:`Gateway.asgi` does (the same answers, slow hashes off the event loop, a
    stripped service prefix appended to ``root_path``), and also sets Starlette's defaults for
    unauthenticated requests and the gateway for guards.

    Args:
        app: The ASGI app to protect.
        config: A configuration mapping, the path of a YAML, JSON or TOML file, or a
            :class:`~consumer_auth.Gateway`.

    Raises:
        ConfigError: ``config`` is invalid (the message names the place), or has no routes while unmatched
            requests are rejected (every request would get 404).

    Example::

        app.add_middleware(ConsumerAuthMiddleware, config="gateway.yaml")
    """

    def __init__(self, app: ASGIApp, config: object = None) -> None:
        super().__init__(cast(Any, app), load_gateway(config, "config"))

    def allowed_scope(
        self, scope: HTTPScope | WebSocketScope, facts: RequestFacts, decision: Allow
    ) -> dict[str, Any]:
        """The core's scope, plus the gateway (for guards) and Starlette's unauthenticated defaults."""
        changed = super().allowed_scope(scope, facts, decision)
        changed[GATEWAY_KEY] = self.gateway
        if decision.consumer is None:
            changed.setdefault("user", UnauthenticatedUser())
            changed.setdefault("auth", AuthScopes([]))
        return changed


class Rejected(HTTPException):
    """Raised by a guard to answer a request with a rejection.

    :func:`install` registers :func:`rejected_response` for it, which sends the rejection's exact bytes.
    Without that handler it is still an ``HTTPException`` with the right status, message (``detail``) and
    ``WWW-Authenticate`` header, in the framework's own body format.
    """

    def __init__(self, reject: Reject) -> None:
        document = json.loads(reject.body)
        headers = {name: value for name, value in reject.headers if name.lower() != "content-type"}
        super().__init__(reject.status, str(next(iter(document.values()), "")), headers or None)
        self.reject = reject


async def rejected_response(connection: HTTPConnection, exc: Exception) -> Response | None:
    """The exception handler for :class:`Rejected`: the rejection's exact status, headers and body.

    A websocket handshake is refused as the middleware refuses it (an HTTP answer where the server
    supports that, else close code 1008).
    """
    reject = cast(Rejected, exc).reject
    if connection.scope["type"] == "websocket":
        websocket = cast(WebSocket, connection)
        await send_reject(
            cast(Any, websocket.scope), cast(Any, websocket.receive), cast(Any, websocket.send), reject
        )
        return None
    body = b"" if connection.scope.get("method") == "HEAD" else reject.body
    return Response(body, status_code=reject.status, headers=dict(reject.wsgi_headers))


def install(app: Starlette, config: object) -> None:
    """Put the gateway in front of a Starlette or FastAPI app and register the guards' exception handler.

    Args:
        app: The application.
        config: A configuration mapping, a file path or a :class:`~consumer_auth.Gateway`.

    Raises:
        ConfigError: see :class:`ConsumerAuthMiddleware` (raised here, not at the first request).
    """
    gateway = load_gateway(config, "config")
    app.add_middleware(ConsumerAuthMiddleware, config=gateway)
    app.add_exception_handler(Rejected, cast(Any, rejected_response))


def get_consumer(connection: HTTPConnection) -> Consumer | None:
    """The consumer of a request or websocket (set by a gateway route or a guard), or ``None``."""
    consumer: Consumer | None = connection.scope.get(CONSUMER_KEY)
    return consumer


def gateway_of(connection: HTTPConnection) -> Gateway:
    """The gateway of the :class:`ConsumerAuthMiddleware` this request came through.

    Raises:
        RuntimeError: the middleware is not installed.
    """
    gateway = connection.scope.get(GATEWAY_KEY)
    if not isinstance(gateway, Gateway):
        raise RuntimeError("ConsumerAuthMiddleware is not installed (use install(app, config))")
    return gateway


async def authorize(connection: HTTPConnection, guard: Guard) -> Consumer:
    """Run a guard on a request: its consumer, or :class:`Rejected` with the gateway's answer.

    A request that a gateway route already authenticated is not authenticated again (only the guard's
    ``consumer-restriction`` runs). On success the consumer is put in the scope (``request.user``,
    ``request.auth``, ``consumer_auth.consumer``). Slow hashes are verified off the event loop.

    Raises:
        Rejected: the guard said no.
    """
    scope = connection.scope
    decision = await resolve(guard.decide(facts_from_scope(cast(Any, scope)), scope.get(CONSUMER_KEY)))
    if isinstance(decision, Reject):
        raise Rejected(decision)
    consumer = cast(Consumer, decision.consumer)  # a guard has basic-auth: an allowed request has a consumer
    scope[CONSUMER_KEY] = scope["user"] = consumer
    scope["auth"] = AuthScopes() if consumer.is_authenticated else AuthScopes([])  # SPEC §8a
    return consumer
