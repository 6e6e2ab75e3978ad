"""The ASGI adapter: translate a scope to request facts and a decision back to ASGI messages.

HTTP and websocket scopes are decided; every other scope (lifespan) passes straight through. Slow
password hashes are verified in a small bounded thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .decision import IDENTITY_HEADERS, Allow, Decision, Pending, Reject, RequestFacts
from .routing import normalize_path
from .wsgi import CONSUMER_KEY

if TYPE_CHECKING:
    from asgiref.typing import (
        ASGI3Application,
        ASGIReceiveCallable,
        ASGISendCallable,
        HTTPScope,
        Scope,
        WebSocketScope,
    )

    from .gateway import Gateway

__all__ = [
    "ASGIGatewayMiddleware",
    "AuthScopes",
    "apply_allow_scope",
    "facts_from_scope",
    "resolve",
]

_IDENTITY = frozenset(name.encode() for name in IDENTITY_HEADERS)
_IDENTITY_AND_AUTHORIZATION = _IDENTITY | {b"authorization"}

_executor: ThreadPoolExecutor | None = None


def _verification_pool() -> ThreadPoolExecutor:
    """The process-wide pool slow verifications run in (bounded: a flood cannot start more threads)."""
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(
            max_workers=max(2, os.cpu_count() or 1), thread_name_prefix="consumer-auth-verify"
        )
    return _executor


async def resolve(decision: Decision | Pending) -> Decision:
    """Finish a decision on an event loop: a slow verification runs in the verification pool."""
    if isinstance(decision, Pending):
        if not decision.slow:
            return decision.run()
        return await asyncio.get_running_loop().run_in_executor(_verification_pool(), decision.run)
    return decision


@dataclass(frozen=True, slots=True)
class AuthScopes:
    """What ``scope["auth"]`` holds after authentication (Starlette's ``request.auth`` convention).

    ``scopes`` is ``["authenticated"]``, so Starlette's ``@requires("authenticated")`` works.
    """

    scopes: list[str] = field(default_factory=lambda: ["authenticated"])


def facts_from_scope(scope: HTTPScope | WebSocketScope) -> RequestFacts:
    """The request facts of an HTTP or websocket scope."""
    host: str | None = None
    authorization: list[str] = []
    for name, value in scope["headers"]:
        if name == b"host":
            host = value.decode("latin-1")
        elif name == b"authorization":
            authorization.append(value.decode("latin-1"))
    server = scope.get("server")
    if host is None and server is not None:
        host = server[0]
    method = scope["method"] if scope["type"] == "http" else "GET"
    return RequestFacts(method, normalize_path(_route_path(scope) or "/"), host, tuple(authorization))


def _route_path(scope: HTTPScope | WebSocketScope) -> str:
    """The path below ``root_path`` (``path`` includes ``root_path``, as in Starlette and uvicorn)."""
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


def apply_allow_scope(
    scope: HTTPScope | WebSocketScope, facts: RequestFacts, decision: Allow
) -> dict[str, Any]:
    """A copy of ``scope`` changed as the decision says, for the app to see.

    Client copies of the identity headers are always removed; the gateway's are added; ``authorization``
    goes when credentials are hidden; the consumer is put under ``consumer_auth.consumer``, ``user`` and
    ``auth``; a stripped service prefix is appended to ``root_path`` (``path`` stays whole, as Starlette's
    ``Mount`` does).
    """
    drop = _IDENTITY_AND_AUTHORIZATION if decision.hide_credentials else _IDENTITY
    headers = [(name, value) for name, value in scope["headers"] if name not in drop]
    headers.extend((name.encode(), value.encode("latin-1")) for name, value in decision.identity_headers)
    changed: dict[str, Any] = dict(scope)
    changed["headers"] = headers
    if decision.consumer is not None:
        changed[CONSUMER_KEY] = decision.consumer
        changed["user"] = decision.consumer
        changed["auth"] = AuthScopes()
    root_path = scope.get("root_path", "")
    if _route_path(scope) != facts.path:
        # The path was normalized for matching: the app sees the path that was authorized.
        changed["path"] = root_path + facts.path
        changed["raw_path"] = quote(changed["path"]).encode("ascii")
    if decision.strip_prefix and facts.path.startswith(decision.strip_prefix):
        changed["root_path"] = root_path + decision.strip_prefix
    return changed


async def send_reject(
    scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable, reject: Reject
) -> None:
    """Answer an HTTP request, or refuse a websocket handshake, with a rejection."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": reject.status,
                    "headers": list(reject.raw_headers),
                }
            )
            await send({"type": "websocket.http.response.body", "body": reject.body, "more_body": False})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": ""})
        return
    await send(
        {
            "type": "http.response.start",
            "status": reject.status,
            "headers": list(reject.raw_headers),
            "trailers": False,
        }
    )
    body = b"" if scope["type"] == "http" and scope["method"] == "HEAD" else reject.body
    await send({"type": "http.response.body", "body": body, "more_body": False})


class ASGIGatewayMiddleware:
    """ASGI middleware that lets a request reach ``app`` only when the gateway allows it.

    Usually made with :meth:`Gateway.asgi`. Lifespan and other non-HTTP scopes pass straight through.
    """

    def __init__(self, app: ASGI3Application, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        facts = facts_from_scope(scope)
        decision = await resolve(self.gateway.decide(facts))
        if isinstance(decision, Reject):
            await send_reject(scope, receive, send, decision)
            return
        await self.app(self.allowed_scope(scope, facts, decision), receive, send)  # type: ignore[arg-type]

    def allowed_scope(
        self, scope: HTTPScope | WebSocketScope, facts: RequestFacts, decision: Allow
    ) -> dict[str, Any]:
        """The scope the app gets for an allowed request (:func:`apply_allow_scope`); integrations extend it."""
        return apply_allow_scope(scope, facts, decision)
