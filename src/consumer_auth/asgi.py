"""The ASGI adapter: translate a scope to request facts and a decision back to ASGI messages.

HTTP and websocket scopes are decided; every other scope (lifespan) passes straight through. Slow
password hashes are verified in a bounded thread pool with per-login lanes (:class:`VerificationPool`),
never on the event loop; clear passwords and cached successes never leave it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ._verify import WORKER_NICE, default_workers, lane_of, lower_priority
from .sansio._paths import cut_fragment
from .sansio.decision import IDENTITY_SPELLINGS, Allow, Decision, Pending, Reject, RequestFacts
from .sansio.routing import normalize_path
from .wsgi import CONSUMER_KEY

if TYPE_CHECKING:
    from asgiref.typing import (
        ASGIReceiveCallable,
        ASGISendCallable,
        HTTPScope,
        Scope,
        WebSocketScope,
    )

    from .sansio.gateway import Gateway

__all__ = [
    "ASGIApp",
    "ASGIGatewayMiddleware",
    "AuthScopes",
    "VerificationPool",
    "apply_allow_scope",
    "facts_from_scope",
    "resolve",
    "verification_pool",
]

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]
"""An ASGI 3 application, however its framework types the scope and the two callables (asgiref's
``ASGI3Application``, Starlette's and FastAPI's ``MutableMapping`` scopes are all one)."""

_IDENTITY_AND_AUTHORIZATION = IDENTITY_SPELLINGS | {b"authorization"}


class VerificationPool:
    """Runs slow password verifications off the event loop: bounded, fair between logins.

    A bounded thread pool (``workers`` threads, at lower CPU priority on Linux) behind per-login lanes:
    one verification per lane at a time, so the pool's queue never holds more than one job per lane and
    a flood of wrong passwords for one login cannot hold up the others. The pool refuses nothing: how
    many verifications may be pending is bounded by the gateway before they get here (503 over the
    bound). See ``consumer_auth._verify`` and ``docs/passwords.md``.

    Args:
        workers: Threads verifying at once (default: half the CPUs, at least one).
        nice: How much lower the threads' CPU priority is (Linux; ``0`` keeps the process's).
    """

    def __init__(self, workers: int | None = None, *, nice: int = WORKER_NICE) -> None:
        self.workers = workers or default_workers()
        self._executor = ThreadPoolExecutor(
            max_workers=self.workers,
            thread_name_prefix="consumer-auth-verify",
            initializer=lower_priority,
            initargs=(nice,),
        )
        self._lanes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Lock]] = (
            weakref.WeakKeyDictionary()
        )

    async def run(self, pending: Pending) -> Decision:
        """Verify in the pool once the login's lane is free; the lane frees when the thread is done."""
        loop = asyncio.get_running_loop()
        lanes = self._lanes.get(loop)
        if lanes is None:
            lanes = self._lanes.setdefault(loop, {})
        lane = lane_of(pending.login)
        lock = lanes.get(lane)
        if lock is None:
            lock = lanes.setdefault(lane, asyncio.Lock())
        await lock.acquire()
        try:
            future = self._executor.submit(pending.run)
        except BaseException:
            lock.release()
            raise
        # Free the lane when the thread finishes, not when this coroutine is cancelled (a client that
        # goes away must not let more jobs into the pool than there are lanes).
        future.add_done_callback(lambda _: _release_from_thread(loop, lock))
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        """Stop the threads once queued verifications are done."""
        self._executor.shutdown(wait=True)


def _release_from_thread(loop: asyncio.AbstractEventLoop, lock: asyncio.Lock) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits on its lanes any more
        loop.call_soon_threadsafe(lock.release)


_pool: VerificationPool | None = None
_pool_lock = threading.Lock()


def verification_pool() -> VerificationPool:
    """The process-wide :class:`VerificationPool` every ASGI adapter and proxy shares."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = VerificationPool()
    return _pool


async def resolve(decision: Decision | Pending, pool: VerificationPool | None = None) -> Decision:
    """Finish a decision on an event loop: a slow verification runs in ``pool`` (default: the
    process-wide :func:`verification_pool`)."""
    if isinstance(decision, Pending):
        if not decision.slow:
            return decision.run()
        return await (pool or verification_pool()).run(decision)
    return decision


class AuthScopes:
    """What ``scope["auth"]`` holds after authentication (Starlette's ``request.auth`` convention).

    ``scopes`` is ``["authenticated"]``, so Starlette's ``@requires("authenticated")`` works; it is empty
    for an anonymous consumer, which is not authenticated (SPEC §8a).
    """

    __slots__ = ("scopes",)

    def __init__(self, scopes: list[str] | None = None) -> None:
        self.scopes: list[str] = ["authenticated"] if scopes is None else scopes

    def __repr__(self) -> str:
        return f"AuthScopes(scopes={self.scopes!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AuthScopes) and self.scopes == other.scopes

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass it replaces


def facts_from_scope(scope: HTTPScope | WebSocketScope) -> RequestFacts:
    """The request facts of an HTTP or websocket scope.

    The method is upper-cased (a server may pass ``get`` on); the path is read as routers read it: ``/`` +
    a path that lacks it, without a fragment the server left in it, normalized.
    """
    host: str | None = None
    authorization: list[str] = []
    forwarded_for: list[str] = []
    for name, value in scope["headers"]:
        if name == b"host":
            # A second Host is kept as WSGI servers keep it, joined by a comma: the gateway refuses it.
            host = value.decode("latin-1") if host is None else f"{host},{value.decode('latin-1')}"
        elif name == b"authorization":
            authorization.append(value.decode("latin-1"))
        elif name == b"x-forwarded-for":
            forwarded_for.append(value.decode("latin-1"))
    server = scope.get("server")
    if host is None and server is not None:
        host = server[0]
    peer = scope.get("client")
    method = scope["method"].upper() if scope["type"] == "http" else "GET"
    path = _route_path(scope) or "/"
    if "#" in path:  # a server may have left the fragment in the path (SPEC §8)
        path = cut_fragment(path, scope.get("raw_path"))
    return RequestFacts(
        method,
        normalize_path(path),
        host,
        tuple(authorization),
        peer[0] if peer else None,
        tuple(forwarded_for),
        _header_reader(scope["headers"]),
    )


def _header_reader(headers: Iterable[tuple[bytes, bytes]]) -> Callable[[str], str | None]:
    def header(name: str) -> str | None:
        wanted = name.encode("latin-1")
        for key, value in headers:
            if key == wanted:
                return value.decode("latin-1")
        return None

    return header


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

    Client copies of the identity headers are always removed, in any spelling (``x_consumer_username``
    too: :func:`~consumer_auth.sansio.decision.header_key`); the gateway's are added; ``authorization``
    goes when credentials are hidden; the consumer is put under ``consumer_auth.consumer``, ``user`` and
    ``auth``; a stripped service prefix is appended to ``root_path`` (``path`` stays whole, as Starlette's
    ``Mount`` does).
    """
    drop = _IDENTITY_AND_AUTHORIZATION if decision.hide_credentials else IDENTITY_SPELLINGS
    headers = [(name, value) for name, value in scope["headers"] if name not in drop]
    headers += decision.raw_identity_headers
    changed: dict[str, Any] = dict(scope)
    changed["headers"] = headers
    if decision.consumer is not None:
        changed[CONSUMER_KEY] = decision.consumer
        changed["user"] = decision.consumer
        changed["auth"] = AuthScopes() if decision.consumer.is_authenticated else AuthScopes([])
    root_path = scope.get("root_path", "")
    if (_route_path(scope) if root_path else scope["path"]) != facts.path:
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


_STARTS = ("http.response.start", "websocket.http.response.start")


def with_headers(send: ASGISendCallable, raw: tuple[tuple[bytes, bytes], ...]) -> ASGISendCallable:
    """A ``send`` that adds the plugins' response headers (``Allow.raw_response_headers``) to the
    app's response start."""

    def sending(message: Any) -> Awaitable[None]:
        # A plain function handing back send's awaitable: no coroutine of its own per message.
        if message["type"] in _STARTS:
            message = message.copy()
            message["headers"] = [*message.get("headers", ()), *raw]
        return send(message)

    return sending


class ASGIGatewayMiddleware:
    """ASGI middleware that lets a request reach ``app`` only when the gateway allows it.

    Usually made with :meth:`Gateway.asgi`. Lifespan and other non-HTTP scopes pass straight through.
    ``pool`` is where slow hashes are verified (default: the process-wide :func:`verification_pool`).
    """

    def __init__(self, app: ASGIApp, gateway: Gateway, *, pool: VerificationPool | None = None) -> None:
        self.app = app
        self.gateway = gateway
        self.pool = pool

    async def _handle(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        facts = facts_from_scope(scope)
        decision = self.gateway.decide(facts)
        if isinstance(decision, Pending):
            decision = await resolve(decision, self.pool)
        if isinstance(decision, Reject):
            await send_reject(scope, receive, send, decision)
            return
        if decision.raw_response_headers:
            send = with_headers(send, decision.raw_response_headers)
        await self.app(self.allowed_scope(scope, facts, decision), receive, send)

    if TYPE_CHECKING:
        # To type checkers the middleware takes any framework's ASGI types (asgiref's TypedDict scopes,
        # Starlette's MutableMapping ones), so it can go wherever an ASGI app goes: uvicorn, Starlette's
        # mount, httpx's ASGITransport. At run time it is _handle itself, with no extra call.
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...

    else:
        __call__ = _handle

    def allowed_scope(
        self, scope: HTTPScope | WebSocketScope, facts: RequestFacts, decision: Allow
    ) -> dict[str, Any]:
        """The scope the app gets for an allowed request (:func:`apply_allow_scope`); integrations extend it."""
        return apply_allow_scope(scope, facts, decision)
