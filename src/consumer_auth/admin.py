"""The Admin API: APISIX-compatible paths to manage consumers, credentials, services and routes.

An ASGI app of its own, meant for its own listener (``consumer-auth serve --admin-listen``), never
mounted next to the traffic it guards. Every request needs the admin key in ``X-API-KEY``.

===========================================================  =====================================
path                                                         methods
===========================================================  =====================================
``/apisix/admin/consumers``                                  ``GET`` (list), ``PUT`` (``username`` in body)
``/apisix/admin/consumers/{username}``                       ``GET``, ``PUT``, ``DELETE``
``/apisix/admin/consumers/{username}/credentials``           ``GET`` (list)
``/apisix/admin/consumers/{username}/credentials/{id}``      ``GET``, ``PUT``, ``DELETE``
``/apisix/admin/consumer_groups``                            ``GET`` (list), ``PUT`` (``id`` in body)
``/apisix/admin/consumer_groups/{id}``                       ``GET``, ``PUT``, ``DELETE``
``/apisix/admin/services``, ``/apisix/admin/routes``          ``GET`` (list), ``POST`` (new id)
``/apisix/admin/services/{id}``, ``/apisix/admin/routes/{id}``  ``GET``, ``PUT``, ``DELETE``
===========================================================  =====================================

Answers have APISIX's shapes: ``{"key", "value", "createdIndex", "modifiedIndex"}`` for one resource,
``{"total", "list"}`` for many, ``{"deleted": "1", "key"}`` after a delete, 400 ``{"error_msg":
"invalid configuration: <place>: <reason>"}`` for invalid input (deleting a consumer group a consumer is
in: APISIX's 400 ``{"error_msg": "can not delete this consumer group, consumer [alex] is still using it
now"}``), 401 ``{"error_msg": "failed to check
token"}`` without the right key, 404 ``{"message": "Key not found"}``.

Security note: passwords are hashed (argon2id) before they are stored, and no password or hash is ever
part of an answer or a log line.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, StoreError, StoreUnavailableError
from .sansio._validate import expect_str
from .store import Resource, WritableStore, redact

if TYPE_CHECKING:
    from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

__all__ = ["AdminAPI"]

logger = logging.getLogger("consumer_auth.admin")

_PREFIX = "/apisix/admin/"
_MAX_BODY = 1_572_864  # 1.5 MiB, as APISIX
_MAX_DEPTH = 32  # lists and objects in lists and objects: a resource needs a handful
_JSON = [(b"content-type", b"application/json")]


class _Unstorable(ValueError):
    """A number JSON allows but a store cannot keep as written (infinite, or not a number)."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Unstorable("a number too large to store")
    return value


def _no_constant(text: str) -> float:
    raise _Unstorable(f"{text} is not a JSON number")


def _number_problem(error: ValueError) -> str:
    if isinstance(error, _Unstorable):
        return str(error)
    return "an integer with too many digits"  # int() refuses more than sys.get_int_max_str_digits()


class _Answer(Exception):
    """A finished response, raised from deep inside a handler."""

    def __init__(
        self, status: int, body: Mapping[str, Any], headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        self.status = status
        self.body = body
        self.headers = list(headers)


def _too_deep(document: object) -> bool:
    """Whether ``document`` nests lists and objects deeper than :data:`_MAX_DEPTH` (checked without
    recursion: validating, copying and storing a deeper one would exhaust the stack)."""
    level: list[object] = [document]
    for _ in range(_MAX_DEPTH):
        below: list[object] = []
        for value in level:
            if isinstance(value, dict):
                below += value.values()
            elif isinstance(value, list):
                below += value
        if not below:
            return False
        level = below
    return any(isinstance(value, dict | list) for value in level)


def _not_found() -> _Answer:
    return _Answer(404, {"message": "Key not found"})


def _shown(resource: Resource) -> dict[str, Any]:
    kind, key = resource.kind, resource.key
    if kind == "credentials":
        consumer, _, ident = key.partition("/")
        path = f"/apisix/consumers/{consumer}/credentials/{ident}"
    else:
        path = f"/apisix/{kind}/{key}"
    return {
        "key": path,
        "value": redact(resource.document),
        "createdIndex": resource.created,
        "modifiedIndex": resource.modified,
    }


class AdminAPI:
    """The Admin API over a writable store (an ASGI 3 app).

    Args:
        store: Where resources live (a :class:`~consumer_auth.store.SQLStore`).
        admin_key: The key clients send in ``X-API-KEY`` (several keys allowed, for rotation). Required:
            the API never runs open.
        on_change: Called after every successful write (for example the local gateway's
            ``watcher.wake``, so that it applies the change at once).

    Raises:
        ConfigError: at ``admin_key`` when no non-empty key is given.

    Example::

        store = SQLStore("sqlite:///consumers.db")
        admin = AdminAPI(store, admin_key=os.environ["ADMIN_KEY"])
        uvicorn.run(admin, host="127.0.0.1", port=9180)
    """

    def __init__(
        self,
        store: WritableStore,
        *,
        admin_key: str | Iterable[str],
        on_change: Callable[[], None] | None = None,
    ) -> None:
        keys = (admin_key,) if isinstance(admin_key, str) else tuple(admin_key)
        if not keys:
            raise ConfigError("admin_key", "required: the admin API never runs without a key")
        self._keys = tuple(expect_str(key, "admin_key", secret=True).encode() for key in keys)
        self.store = store
        self.on_change = on_change

    # -- ASGI ---------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        try:
            if not self._authorized(scope["headers"]):
                raise _Answer(401, {"error_msg": "failed to check token"})
            status, body = await self._dispatch(scope["method"], scope["path"], receive)
            answer = _Answer(status, body)
        except _Answer as raised:
            answer = raised
        except ConfigError as error:
            answer = _Answer(400, {"error_msg": f"invalid configuration: {error}"})
        except StoreUnavailableError as error:
            logger.warning("admin: %s: %s", self.store.name, error)
            answer = _Answer(503, {"error_msg": "the store is unavailable; try again"})
        except StoreError as error:
            logger.error("admin: %s: %s", self.store.name, error)
            answer = _Answer(500, {"error_msg": "the store failed; see the server log"})
        payload = json.dumps(answer.body, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        headers = [*_JSON, (b"content-length", str(len(payload)).encode()), *answer.headers]
        await send(
            {"type": "http.response.start", "status": answer.status, "headers": headers, "trailers": False}
        )
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    def _authorized(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        given = [value for name, value in headers if name == b"x-api-key"]
        return len(given) == 1 and self.is_admin_key(given[0])

    def is_admin_key(self, given: bytes) -> bool:
        """Whether ``given`` is one of the admin keys (compared in constant time)."""
        # Compare with every key, whatever matches, so timing tells nothing about which one is close.
        matches = [hmac.compare_digest(given, key) for key in self._keys]
        return any(matches)

    # -- operations: the HTTP handlers below and the console (consumer_auth.console) both use these ---

    async def list_resources(self, kind: str, parent: str | None = None) -> list[Resource]:
        """Every resource of a kind (credentials of one consumer with ``parent``), off the event loop."""
        found: list[Resource] = await self._call(self.store.list_resources, kind, parent)
        return found

    async def get_resource(self, kind: str, key: str) -> Resource | None:
        """One resource, or ``None``."""
        found: Resource | None = await self._call(self.store.get_resource, kind, key)
        return found

    async def put_resource(self, kind: str, key: str, body: Mapping[str, Any]) -> tuple[Resource, bool]:
        """Validate and store one resource (passwords hashed), then tell ``on_change``.

        Raises:
            ConfigError: the document, or the store's content with it, is invalid; nothing changed.
        """
        result: tuple[Resource, bool] = await self._call(self.store.put_resource, kind, key, body)
        self._changed()
        return result

    async def delete_resource(self, kind: str, key: str) -> bool:
        """Delete one resource (a consumer with its credentials); ``False`` when there was none.

        Raises:
            ConfigError: the content without it would be invalid (a service that routes still use).
        """
        deleted: bool = await self._call(self.store.delete_resource, kind, key)
        if deleted:
            self._changed()
        return deleted

    # -- routing ------------------------------------------------------------------------------------

    async def _dispatch(
        self, method: str, path: str, receive: ASGIReceiveCallable
    ) -> tuple[int, Mapping[str, Any]]:
        if not path.startswith(_PREFIX):
            raise _Answer(404, {"error_msg": "404 Route Not Found"})
        parts = path[len(_PREFIX) :].rstrip("/").split("/")
        kind, rest = parts[0], parts[1:]
        if kind == "consumers" and len(rest) >= 2 and rest[1] == "credentials":
            consumer = rest[0]
            if len(rest) == 2:
                return await self._collection(method, "credentials", receive, parent=consumer)
            if len(rest) == 3 and rest[2]:
                return await self._item(method, "credentials", f"{consumer}/{rest[2]}", receive)
        elif kind in ("consumers", "consumer_groups", "services", "routes"):
            if not rest:
                return await self._collection(method, kind, receive)
            if len(rest) == 1 and rest[0]:
                return await self._item(method, kind, rest[0], receive)
        raise _Answer(404, {"error_msg": "404 Route Not Found"})

    async def _collection(
        self, method: str, kind: str, receive: ASGIReceiveCallable, *, parent: str | None = None
    ) -> tuple[int, Mapping[str, Any]]:
        if method == "GET":
            if parent is not None and await self.get_resource("consumers", parent) is None:
                raise _not_found()
            found = await self.list_resources(kind, parent)
            return 200, {"total": len(found), "list": [_shown(resource) for resource in found]}
        if kind in ("consumers", "consumer_groups") and method == "PUT":
            body = await self._body(receive)
            field = "username" if kind == "consumers" else "id"
            name = body.get(field)
            if not isinstance(name, str) or not name:
                raise ConfigError(field, "required")
            return await self._put(kind, name, body)
        if kind in ("routes", "services") and method == "POST":
            body = await self._body(receive)
            if "id" in body:
                raise ConfigError("id", "not allowed with POST (PUT to /apisix/admin/{kind}/{id} instead)")
            return await self._put(kind, str(time.time_ns()), body)
        allowed = (
            "GET, PUT"
            if kind in ("consumers", "consumer_groups")
            else ("GET" if parent is not None else "GET, POST")
        )
        raise _Answer(405, {"error_msg": "method not allowed"}, [(b"allow", allowed.encode())])

    async def _item(
        self, method: str, kind: str, key: str, receive: ASGIReceiveCallable
    ) -> tuple[int, Mapping[str, Any]]:
        if method == "GET":
            resource = await self.get_resource(kind, key)
            if resource is None:
                raise _not_found()
            return 200, _shown(resource)
        if method == "PUT":
            return await self._put(kind, key, await self._body(receive))
        if method == "DELETE":
            try:
                deleted = await self.delete_resource(kind, key)
            except ConfigError as error:
                if error.path:
                    raise
                raise _Answer(400, {"error_msg": error.reason}) from None  # in APISIX's words
            if not deleted:
                raise _not_found()
            shown = _shown(Resource(kind, key, {}, 0, 0))["key"]
            return 200, {"deleted": "1", "key": shown}
        raise _Answer(405, {"error_msg": "method not allowed"}, [(b"allow", b"GET, PUT, DELETE")])

    async def _put(self, kind: str, key: str, body: Mapping[str, Any]) -> tuple[int, Mapping[str, Any]]:
        resource, created = await self.put_resource(kind, key, body)
        return (201 if created else 200), _shown(resource)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    @staticmethod
    async def _call(function: Callable[..., Any], *args: Any) -> Any:
        # Stores block (database I/O, argon2 hashing): keep them off the event loop.
        return await asyncio.to_thread(function, *args)

    @staticmethod
    async def _body(receive: ASGIReceiveCallable) -> Mapping[str, Any]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _Answer(400, {"error_msg": "invalid request body: the client went away"})
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > _MAX_BODY:
                raise _Answer(413, {"error_msg": "invalid request body: larger than 1.5 MiB"})
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        if not raw.strip():
            raise _Answer(400, {"error_msg": "invalid request body: empty"})
        try:
            document = json.loads(raw.decode("utf-8"), parse_float=_finite, parse_constant=_no_constant)
        except UnicodeDecodeError:
            raise _Answer(400, {"error_msg": "invalid request body: not UTF-8"}) from None
        except json.JSONDecodeError as error:
            raise _Answer(
                400,
                {
                    "error_msg": f"invalid request body: {error.msg} at line {error.lineno}, column {error.colno}"
                },
            ) from None
        except RecursionError:  # nesting past the parser's stack
            raise _Answer(
                400, {"error_msg": f"invalid request body: nested deeper than {_MAX_DEPTH} levels"}
            ) from None
        except ValueError as error:  # an integer of more digits than Python reads, an infinite number
            raise _Answer(400, {"error_msg": f"invalid request body: {_number_problem(error)}"}) from None
        if not isinstance(document, dict):
            raise _Answer(400, {"error_msg": "invalid request body: expected a JSON object"})
        if _too_deep(document):
            raise _Answer(400, {"error_msg": f"invalid request body: nested deeper than {_MAX_DEPTH} levels"})
        return document
