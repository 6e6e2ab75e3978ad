"""The ASGI forwarding proxy (``gateway.asgi_proxy()``), on aiohttp's client.

aiohttp was chosen by measurement: under 32 concurrent connections on two cores it forwarded about ten
times as many requests per second as an httpx-based forwarder (numbers and command in ``docs/proxy.md``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
from yarl import URL

from consumer_auth.asgi import VerificationPool, facts_from_scope, resolve, send_reject
from consumer_auth.decision import Allow, Pending, Reject
from consumer_auth.errors import UpstreamAbortedError
from consumer_auth.upstream import Upstream

from ._balance import Balancers
from ._common import Exchange, check_upstreams, default_upstream, log_fault, upstream_for
from ._plan import (
    BAD_GATEWAY,
    GATEWAY_TIMEOUT,
    NOT_IMPLEMENTED,
    ClientRequest,
    UpstreamRequest,
    response_headers,
    upstream_request,
)

if TYPE_CHECKING:
    from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope

    from consumer_auth.gateway import Gateway

__all__ = ["ASGIProxy"]

# aiohttp adds these unless told not to; a proxy sends only what the client sent.
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


class ClientDisconnectedError(ConnectionError):
    """The client went away while its request body was being forwarded."""


def _text(value: bytes) -> str:
    """A header value as aiohttp wants it (it writes headers as UTF-8, so UTF-8 round-trips exactly)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _client(scope: HTTPScope) -> ClientRequest:
    client = scope.get("client")
    server = scope.get("server")
    headers = scope["headers"]
    return ClientRequest(
        headers=headers if isinstance(headers, list | tuple) else list(headers),
        scheme=scope.get("scheme", "http"),
        peer=client[0] if client else None,
        server_port=server[1] if server else None,
        # With a root_path, servers disagree on whether raw_path includes it: use the decoded path then.
        raw_path=None if scope.get("root_path") else scope.get("raw_path"),
        query=scope.get("query_string", b""),
    )


class _RequestBody:
    """The client's request body, handed to aiohttp as it arrives, under the upstream's send timeout.

    The first ``http.request`` message is read before connecting, to know whether there is a body at all
    (HTTP/2 clients may send one without ``Content-Length``).
    """

    __slots__ = (
        "_first",
        "_more",
        "_receive",
        "_send_timeout",
        "deadline",
        "disconnected",
        "done",
        "present",
        "started",
    )

    def __init__(self, receive: ASGIReceiveCallable, send_timeout: float) -> None:
        self._receive = receive
        self._send_timeout = send_timeout
        self._first = b""
        self._more = False
        self.present = False
        self.started = False
        self.done = False
        self.disconnected = False
        self.deadline: asyncio.Timeout | None = None

    async def start(self) -> bool:
        """Read the first message; false when the client is already gone."""
        message = await self._receive()
        if message["type"] != "http.request":
            return False
        self._first = message.get("body", b"")
        self._more = message.get("more_body", False)
        self.present = bool(self._first) or self._more
        self.done = not self.present
        return True

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk; each hand-over to the upstream must finish within the send timeout."""
        self.started = True
        loop = asyncio.get_running_loop()
        chunk, more = self._first, self._more
        self._first = b""
        while True:
            if chunk:
                deadline = self.deadline
                if deadline is not None:
                    deadline.reschedule(loop.time() + self._send_timeout)
                yield chunk
                # Time spent waiting for the client's next chunk is not the upstream's fault.
                if deadline is not None and self.deadline is deadline:
                    deadline.reschedule(None)
            if not more:
                break
            message = await self._receive()
            if message["type"] != "http.request":
                self.disconnected = True
                raise ClientDisconnectedError
            chunk, more = message.get("body", b""), message.get("more_body", False)
        self.done = True


class ASGIProxy:
    """An ASGI app that authenticates each request with a gateway and forwards the allowed ones upstream.

    Usually made with :meth:`Gateway.asgi_proxy`. Rejections are the gateway's own answers, byte for
    byte as in the middleware modes. An allowed request goes to its route's upstream (or the service's,
    or ``upstream``), changed as ``docs/proxy.md`` describes: service prefix stripped from the raw path,
    ``Host`` per ``pass_host``, ``X-Forwarded-*`` and ``X-Real-IP`` set, identity headers set,
    hop-by-hop headers removed both ways. Bodies stream both ways; upstream connections are pooled
    (one aiohttp session per event loop, closed at lifespan shutdown or by :meth:`aclose`).

    Upstream faults before the response starts are answers, never exceptions: connection refused or
    reset → 502, a connect/send/read timeout → 504 (``{"error_msg": ...}`` and a newline). A connection
    that cannot be made is retried on the upstream's next node. A fault after the response started
    aborts the client connection (:class:`~consumer_auth.UpstreamAbortedError`).

    Args:
        gateway: Decides every request.
        upstream: Default upstream (URL or mapping) for routes without one and for ``unmatched: pass``.
        pool: Where slow hashes are verified (default: the process-wide
            :func:`~consumer_auth.asgi.verification_pool`).

    Raises:
        ConfigError: a route has no upstream and no default is given (``routes[i].upstream``), or
            ``unmatched: pass`` without a default (``unmatched``), or ``upstream`` is invalid.

    Example:
        >>> proxy = Gateway.from_file("gateway.yaml").asgi_proxy()  # doctest: +SKIP
        >>> # uvicorn.run(proxy) — or `consumer-auth serve --config gateway.yaml`
    """

    def __init__(
        self,
        gateway: Gateway,
        *,
        upstream: Upstream | str | object | None = None,
        pool: VerificationPool | None = None,
    ) -> None:
        self.gateway = gateway
        self.pool = pool
        self.default_upstream = default_upstream(upstream)
        check_upstreams(gateway, self.default_upstream)
        self._balancers = Balancers()
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}

    # -- the pool ----------------------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            session = aiohttp.ClientSession(
                # No cap on connections, like nginx: the upstream's own limits apply.
                connector=aiohttp.TCPConnector(limit=0),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                timeout=aiohttp.ClientTimeout(total=None),
                trust_env=False,
            )
            self._sessions[loop] = session
        return session

    async def aclose(self) -> None:
        """Close the upstream connections of the running event loop (lifespan shutdown does this)."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()

    # -- ASGI --------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] not in ("http", "websocket"):
            return
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        client = scope.get("client")
        exchange = Exchange(
            client[0] if client else None,
            str(scope.get("method", "GET")),
            raw_path.decode("ascii", "backslashreplace"),
        )
        try:
            await self._handle(scope, receive, send, exchange)
        finally:
            exchange.log()

    async def _lifespan(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _reject(
        self,
        scope: Scope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        reject: Reject,
        exchange: Exchange,
    ) -> None:
        exchange.status = reject.status
        exchange.sent = len(reject.body)
        await send_reject(scope, receive, send, reject)

    async def _handle(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable, exchange: Exchange
    ) -> None:
        facts = facts_from_scope(scope)  # type: ignore[arg-type]
        decision = self.gateway.decide(facts)
        if isinstance(decision, Pending):
            decision = await resolve(decision, self.pool)
        exchange.decision = decision
        if isinstance(decision, Reject):
            await self._reject(scope, receive, send, decision, exchange)
            return
        if scope["type"] == "websocket":
            await self._reject(scope, receive, send, NOT_IMPLEMENTED, exchange)
            return
        upstream = upstream_for(decision, self.default_upstream)
        if upstream is None:  # only after routes were replaced at run time with one lacking an upstream
            log_fault("no upstream for this route", decision, None, None)
            await self._reject(scope, receive, send, BAD_GATEWAY, exchange)
            return
        request = upstream_request(facts, decision, _client(scope))  # type: ignore[arg-type]
        body = _RequestBody(receive, upstream.timeout.send)
        if not await body.start():
            exchange.status = 499  # the client left before anything was forwarded (nginx's convention)
            return
        response = await self._open(upstream, request, body, decision, exchange)
        if isinstance(response, Reject):
            await self._reject(scope, receive, send, response, exchange)
            return
        await self._relay(response, body, receive, send, decision, exchange)

    async def _open(
        self,
        upstream: Upstream,
        request: UpstreamRequest,
        body: _RequestBody,
        decision: Allow,
        exchange: Exchange,
    ) -> aiohttp.ClientResponse | Reject:
        """Send the request to the first node that takes a connection; the response, or the fault's answer."""
        session = self._session()
        timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=upstream.timeout.connect, sock_read=upstream.timeout.read
        )
        headers = [(_text(name), _text(value)) for name, value in request.headers]
        target = request.target.decode("ascii")
        # A pooled connection that the upstream closed just as it was reused fails before any answer:
        # aiohttp itself then sends an idempotent request once more (IDEMPOTENT_METHODS, as below for WSGI).
        fault = BAD_GATEWAY
        for node in self._balancers.order(upstream):
            url = URL(f"{upstream.scheme}://{node.authority}{target}", encoded=True)
            sending = session.request(
                request.method,
                url,
                headers=[*headers, ("Host", _text(request.host(upstream, node)))],
                data=body.chunks() if body.present else None,
                allow_redirects=False,
                timeout=timeout,
            )
            try:
                if not body.present:
                    return await sending
                async with asyncio.timeout(None) as deadline:  # the body's send timeout (see chunks())
                    body.deadline = deadline
                    return await sending
            except aiohttp.ConnectionTimeoutError as error:
                fault = GATEWAY_TIMEOUT
                log_fault("upstream connect timeout", decision, node, error)
            except aiohttp.ClientConnectorError as error:
                fault = BAD_GATEWAY
                log_fault("upstream connection failed", decision, node, error)
            except TimeoutError as error:  # aiohttp's read timeout, or our send timeout
                log_fault("upstream timeout", decision, node, error)
                return GATEWAY_TIMEOUT
            except (aiohttp.ClientError, OSError) as error:
                if not body.disconnected:  # else the client left mid-upload: nothing wrong upstream
                    log_fault("upstream failed", decision, node, error)
                return BAD_GATEWAY
            finally:
                body.deadline = None
                exchange.node = node
            if body.started:  # part of the body went out: it cannot be sent to another node
                break
        return fault

    async def _relay(
        self,
        response: aiohttp.ClientResponse,
        body: _RequestBody,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        decision: Allow,
        exchange: Exchange,
    ) -> None:
        """Stream the upstream's response to the client; stop (and drop the upstream connection) if the
        client goes away."""
        gone = False

        async def watch() -> None:
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
                response.close()  # wakes the relay below

        watcher: asyncio.Future[None] | None = None
        exchange.status = response.status
        finished = False
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": response_headers(response.raw_headers),
                    "trailers": False,
                }
            )
            content = response.content
            try:
                async for chunk in content.iter_any():
                    exchange.sent += len(chunk)
                    finished = content.at_eof()
                    await send({"type": "http.response.body", "body": chunk, "more_body": not finished})
                    if not finished and watcher is None and body.done:
                        # More is coming: watch for the client leaving (once the request body is in, the
                        # next message can only be its disconnect). Most answers fit one read and skip this.
                        watcher = asyncio.ensure_future(watch())
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                if gone:
                    return
                log_fault("upstream broke off the response", decision, exchange.node, error)
                raise UpstreamAbortedError("upstream broke off the response") from None
            if not finished and not gone:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                finished = True
        finally:
            if watcher is not None:
                watcher.cancel()
            if finished:
                response.release()
            else:
                response.close()
