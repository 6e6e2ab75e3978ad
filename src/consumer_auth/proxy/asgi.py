"""The ASGI forwarding proxy (``gateway.asgi_proxy()``), on its own small HTTP/1.1 client.

This module is long because one exchange (decide, open, send, relay, fault answers) reads as one story; the
client and the sans-IO request plan live in ``_client.py`` and ``_plan.py``.

The client (``_client.py``: asyncio protocols, responses parsed by httptools) was chosen by measurement:
under 32 concurrent connections on two cores the proxy forwards more than twice as many requests per
second on it as it did on aiohttp's client, itself about ten times an httpx-based one
(numbers and command in ``docs/proxy.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from consumer_auth.asgi import VerificationPool, facts_from_scope, resolve, send_reject
from consumer_auth.errors import UpstreamAbortedError
from consumer_auth.sansio.decision import Allow, Pending, Reject, RequestFacts
from consumer_auth.sansio.gateway import BAD_REQUEST
from consumer_auth.sansio.upstream import Upstream, UpstreamNode

from ._balance import Balancers
from ._client import Connection, UpstreamPool
from ._common import (
    Exchange,
    check_upstreams,
    checked_upstreams,
    default_upstream,
    log_fault,
    probe_tls,
    tls_for,
    upstream_for,
)
from ._health import Health, Outcome, probe_request, probe_status
from ._plan import (
    BAD_GATEWAY,
    GATEWAY_TIMEOUT,
    IDEMPOTENT,
    NOT_IMPLEMENTED,
    TOO_LARGE,
    UpstreamRequest,
    build_upstream_request,
    port_number,
    response_headers,
)

if TYPE_CHECKING:
    from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope

    from consumer_auth.metrics import Metrics
    from consumer_auth.sansio.gateway import Gateway

__all__ = ["ASGIProxy"]

# HTTP/1.x requests without Content-Length or Transfer-Encoding have no body (RFC 9112 §6.3): for them
# the proxy does not wait for the (empty) first http.request message.
_HTTP1 = frozenset({"1.0", "1.1"})
_LAST_CHUNK = b"0\r\n\r\n"
# A websocket handshake is an HTTP request: X-Forwarded-Proto and the default port follow http/https.
_HTTP_SCHEMES = {"ws": "http", "wss": "https"}
# Responses that never have a body: a Content-Length there describes another response, and the server in
# front would wait for those bytes.
_NO_BODY_STATUS = frozenset({204, 304})


class ClientDisconnectedError(ConnectionError):
    """The client went away while its request body was being forwarded."""


class _TooLarge(Exception):
    """A request body grew past its limit while it was being forwarded."""


class BodyLengthError(ConnectionError):
    """The request body the server handed over is not as long as its ``Content-Length`` said: the
    upstream would read the difference as (part of) another request, so the connection is dropped."""


class _Failed(Exception):
    """An upstream exchange failed before the response started; ``answer`` is what the client gets."""

    def __init__(self, answer: Reject) -> None:
        super().__init__()
        self.answer = answer


# The port of the last ``scope["server"]`` seen: the server gives every request of a connection the
# same tuple (a tuple replaced whole: the loops of other threads never see half of one).
_last_server: tuple[object, int | None] = (None, None)


def _upstream_request(scope: HTTPScope, facts: RequestFacts, decision: Allow) -> UpstreamRequest | Reject:
    """The upstream request for an allowed ``scope`` (:func:`~._plan.upstream_request`)."""
    global _last_server  # noqa: PLW0603 - a one-entry cache
    server = scope.get("server")
    if server is None:
        port = None
    elif _last_server[0] is server:
        port = _last_server[1]
    else:
        port = port_number(server[1])
        if type(server) is tuple:  # immutable: the same object always holds the same port
            _last_server = (server, port)
    client = scope.get("client")
    headers = scope["headers"]
    scheme = scope.get("scheme", "http")
    return build_upstream_request(
        facts,
        decision,
        headers if isinstance(headers, list | tuple) else list(headers),
        _HTTP_SCHEMES.get(scheme, scheme),
        client[0] if client else None,
        port,
        # With a root_path, servers disagree on whether raw_path includes it: use the decoded path then.
        None if scope.get("root_path") else scope.get("raw_path"),
        scope.get("query_string", b""),
    )


def _head(request: UpstreamRequest, host: bytes, framing: tuple[bytes, bytes] | None) -> bytes:
    """The request line and header block (names lower case, ``host`` first, the body's ``framing``
    last).

    Raises:
        ValueError: a value added from the configuration (``upstream_host``, a consumer's label)
            holds a line break or NUL, which would change the request's meaning; the server in front
            has already refused such bytes in the client's own headers.
    """
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.target), b"host: " + host]
    lines += map(b": ".join, request.headers)
    if framing is not None:
        lines.append(b": ".join(framing))
    lines += (b"", b"")
    head = b"\r\n".join(lines)
    breaks = len(lines) - 1
    if head.count(b"\n") != breaks or head.count(b"\r") != breaks or b"\x00" in head:
        raise ValueError("a header value would break the request head")
    return head


class _RequestBody:
    """The client's request body, read from ASGI ``receive`` as it is forwarded.

    The first ``http.request`` message is read before connecting, to know whether there is a body at all
    (HTTP/2 clients may send one without ``Content-Length``).
    """

    __slots__ = ("_first", "_more", "_receive", "disconnected", "done", "limit", "present", "started")

    def __init__(self, receive: ASGIReceiveCallable, limit: int | None = None) -> None:
        self._receive = receive
        self.limit = limit
        self._first = b""
        self._more = False
        self.present = False
        self.started = False
        self.done = True
        self.disconnected = False

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
        """The body's non-empty chunks, as the client sends them.

        Raises:
            _TooLarge: before the chunk that takes the body past ``limit``.
        """
        chunk, more = self._first, self._more
        self._first = b""
        limit, size = self.limit, 0
        while True:
            if chunk:
                size += len(chunk)
                if limit is not None and size > limit:
                    raise _TooLarge
                yield chunk
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
    hop-by-hop headers removed both ways. Bodies stream both ways with backpressure; upstream
    connections are HTTP/1.1 keep-alive, pooled per event loop (closed at lifespan shutdown or by
    :meth:`aclose`).

    Upstream faults before the response starts are answers, never exceptions: connection refused or
    reset → 502, a connect/send/read timeout → 504 (``{"error_msg": ...}`` and a newline). A connection
    that cannot be made is retried on the upstream's next node. A fault after the response started
    aborts the client connection (:class:`~consumer_auth.UpstreamAbortedError`).

    Args:
        gateway: Decides every request.
        upstream: Default upstream (URL or mapping) for routes without one and for ``unmatched: pass``.
        pool: Where slow hashes are verified (default: the process-wide
            :func:`~consumer_auth.asgi.verification_pool`).
        max_body_bytes: Largest request body of routes (and services) that set no ``max_body_bytes``
            of their own (default: no limit). A larger ``Content-Length`` is answered 413 before
            anything is forwarded; a body of unknown length that grows past it drops the upstream
            connection and is answered 413.
        metrics: Count requests, decisions, latencies and node health in these
            :class:`~consumer_auth.metrics.Metrics` (default: none, and nothing is measured).

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
        max_body_bytes: int | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.gateway = gateway
        self.pool = pool
        self.max_body_bytes = max_body_bytes
        self.default_upstream = default_upstream(upstream)
        check_upstreams(gateway, self.default_upstream)
        self._balancers = Balancers()
        self._pools: dict[asyncio.AbstractEventLoop, UpstreamPool] = {}
        self.health = Health()
        """The health of the nodes of upstreams with ``checks`` (probed while the proxy serves)."""
        self._monitors: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}
        self._metrics: Metrics | None = None
        self.metrics = metrics

    @property
    def metrics(self) -> Metrics | None:
        """Where requests and node health are counted (settable; ``None``: nowhere, at no cost)."""
        return self._metrics

    @metrics.setter
    def metrics(self, metrics: Metrics | None) -> None:
        self._metrics = metrics
        self.health.on_change = metrics.node_health if metrics is not None else None

    # -- the pool ----------------------------------------------------------------------------------

    def _pool(self) -> UpstreamPool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = UpstreamPool(loop)
        return pool

    async def aclose(self) -> None:
        """Close the upstream connections of the running event loop and stop its health probes
        (lifespan shutdown does this)."""
        loop = asyncio.get_running_loop()
        monitor = self._monitors.pop(loop, None)
        if monitor is not None:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
        pool = self._pools.pop(loop, None)
        if pool is not None:
            pool.close()

    # -- active health checks ------------------------------------------------------------------------

    def _watch_health(self) -> None:
        """Start probing the upstreams with health checks from this event loop, if not yet done."""
        loop = asyncio.get_running_loop()
        if loop not in self._monitors and checked_upstreams(self.gateway, self.default_upstream):
            self._monitors[loop] = loop.create_task(self._monitor(), name="consumer-auth health checks")

    async def _monitor(self) -> None:
        loop = asyncio.get_running_loop()
        probes: set[asyncio.Task[None]] = set()
        try:
            while True:
                upstreams = checked_upstreams(self.gateway, self.default_upstream)
                for upstream, node in self.health.due(upstreams, loop.time()):
                    probe = loop.create_task(self._probe(upstream, node))
                    probes.add(probe)
                    probe.add_done_callback(probes.discard)
                shortest = min(
                    (
                        min(u.checks.active.healthy_interval, u.checks.active.unhealthy_interval)
                        for u in upstreams
                        if u.checks is not None
                    ),
                    default=1.0,
                )
                await asyncio.sleep(self.health.next_due(upstreams, loop.time(), shortest))
        finally:
            for probe in probes:
                probe.cancel()
            await asyncio.gather(*probes, return_exceptions=True)

    async def _probe(self, upstream: Upstream, node: UpstreamNode) -> None:
        checks = upstream.checks
        if checks is None:
            return
        active = checks.active
        kind, server_name, context = probe_tls(upstream, node)
        outcome: Outcome | None
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(active.timeout):
                reader, writer = await asyncio.open_connection(
                    node.host.strip("[]"), node.port, ssl=context, server_hostname=server_name
                )
                if kind == "tcp":
                    outcome = Outcome.SUCCESS
                else:
                    writer.write(probe_request(upstream, active, node))
                    outcome = probe_status(active, await reader.readline())
        except TimeoutError:
            outcome = Outcome.TIMEOUT
        except (OSError, ValueError):  # refused, reset, TLS refused; an over-long status line
            outcome = Outcome.TCP_FAILURE
        except BaseException:  # cancelled (the proxy is shutting down): drop the connection at once
            if writer is not None:
                writer.transport.abort()
            raise
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(active.timeout):
                    await writer.wait_closed()
        self.health.report_probe(upstream, node, outcome, asyncio.get_running_loop().time())

    # -- ASGI --------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] not in ("http", "websocket"):
            return
        client = scope.get("client")
        exchange = Exchange(
            client[0] if client else None,
            str(scope.get("method", "GET")),
            scope.get("raw_path") or scope["path"],
            self.gateway,
            self._metrics,
        )
        try:
            await self._handle(scope, receive, send, exchange)
        finally:
            exchange.log()

    async def _lifespan(self, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._watch_health()
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
        exchange.facts = facts
        decision = self.gateway.decide(facts)
        if isinstance(decision, Pending):
            decision = await resolve(decision, self.pool)
        exchange.decision = decision
        if exchange.metrics is not None:
            exchange.decided = time.perf_counter()
        if isinstance(decision, Reject):
            await self._reject(scope, receive, send, decision, exchange)
            return
        websocket = scope["type"] == "websocket"
        if websocket and (decision.route is None or not decision.route.enable_websocket):
            await self._reject(scope, receive, send, NOT_IMPLEMENTED, exchange)
            return
        upstream = upstream_for(decision, self.default_upstream)
        if upstream is None:  # only after routes were replaced at run time with one lacking an upstream
            log_fault("no upstream for this route", decision, None, None)
            await self._reject(scope, receive, send, BAD_GATEWAY, exchange)
            return
        request = _upstream_request(scope, facts, decision)  # type: ignore[arg-type]
        if isinstance(request, Reject):  # a Connection header naming a framing header
            await self._reject(scope, receive, send, request, exchange)
            return
        if websocket:
            await self._websocket(scope, receive, send, upstream, request, decision, exchange)
            return
        limit = self.max_body_bytes
        if decision.route is not None and decision.route.max_body_bytes is not None:
            limit = decision.route.max_body_bytes
        if limit is not None and request.content_length is not None and request.content_length > limit:
            await self._reject(scope, receive, send, TOO_LARGE, exchange)
            return
        body = _RequestBody(receive, limit)
        if (request.has_body or scope.get("http_version") not in _HTTP1) and not await body.start():
            exchange.status = 499  # the client left before anything was forwarded (nginx's convention)
            return
        pool = self._pool()
        timed = exchange.metrics is not None
        started = time.perf_counter() if timed else 0.0
        try:
            connection = await self._exchange(pool, upstream, request, body, decision, exchange)
        except _Failed as failed:
            if timed:
                exchange.upstream_seconds = time.perf_counter() - started
            await self._reject(scope, receive, send, failed.answer, exchange)
            return
        if timed:
            exchange.upstream_seconds = time.perf_counter() - started
        await self._relay(pool, connection, receive, send, decision, exchange, upstream.timeout.read)

    async def _websocket(
        self,
        scope: Scope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        upstream: Upstream,
        request: UpstreamRequest,
        decision: Allow,
        exchange: Exchange,
    ) -> None:
        try:
            from ._websocket import forward_websocket
        except ImportError:  # the websockets library is missing (it comes with the proxy and server extras)
            log_fault("websocket forwarding needs the websockets library", decision, None, None)
            await self._reject(scope, receive, send, NOT_IMPLEMENTED, exchange)
            return
        if upstream.checks is not None:
            self._watch_health()
        nodes = self._balancers.order(upstream, self.health.unhealthy(upstream))
        if not nodes:
            log_fault("every upstream node is unhealthy", decision, None, None)
            await self._reject(scope, receive, send, BAD_GATEWAY, exchange)
            return
        await forward_websocket(
            scope,  # type: ignore[arg-type]
            receive,
            send,
            upstream=upstream,
            nodes=nodes,
            request=request,
            decision=decision,
            exchange=exchange,
            health=self.health,
        )

    async def _exchange(
        self,
        pool: UpstreamPool,
        upstream: Upstream,
        request: UpstreamRequest,
        body: _RequestBody,
        decision: Allow,
        exchange: Exchange,
    ) -> Connection:
        """Send the request to the first node that takes a connection; the connection, its response head
        received.

        A reused keep-alive connection that the upstream closed just as the request went out fails before
        any answer: an idempotent request none of whose body went out is then sent once more, on a new
        connection (the rule aiohttp and the WSGI proxy follow).

        Raises:
            _Failed: with the client's answer (502, 504) when no node answered.
        """
        timeout = upstream.timeout
        fault = BAD_GATEWAY
        health = self.health
        checked = upstream.checks is not None
        if checked and asyncio.get_running_loop() not in self._monitors:
            self._watch_health()
        nodes = self._balancers.order(upstream, health.unhealthy(upstream))
        if not nodes:
            log_fault("every upstream node is unhealthy", decision, None, None)
            raise _Failed(BAD_GATEWAY)
        for node in nodes:
            exchange.node = node
            key = (upstream.scheme, node.host, node.port, *tls_for(upstream, node))
            connection = pool.pooled(key)
            replay = connection is not None and request.method in IDEMPOTENT
            while True:
                if connection is None:
                    try:
                        connection = await pool.connect(key, timeout.connect)
                    except TimeoutError as error:
                        fault = GATEWAY_TIMEOUT
                        log_fault("upstream connect timeout", decision, node, error)
                        if checked:
                            health.report_fault(upstream, node, Outcome.TIMEOUT)
                        break
                    except OSError as error:
                        fault = BAD_GATEWAY
                        log_fault("upstream connection failed", decision, node, error)
                        if checked:
                            health.report_fault(upstream, node, Outcome.TCP_FAILURE)
                        break
                try:
                    if body.present:
                        await self._send(connection, upstream, node, request, body, timeout.send)
                    else:
                        self._send_head(connection, upstream, node, request)
                    await connection.response_head(timeout.read)
                except _TooLarge:
                    connection.abort()  # the upstream has part of a body: that request must not end
                    raise _Failed(TOO_LARGE) from None
                except ValueError as error:
                    connection.abort()
                    log_fault("invalid header value for the upstream", decision, node, error)
                    raise _Failed(BAD_GATEWAY) from None
                except TimeoutError as error:
                    connection.abort()
                    log_fault("upstream timeout", decision, node, error)
                    if checked:
                        health.report_fault(upstream, node, Outcome.TIMEOUT)
                    raise _Failed(GATEWAY_TIMEOUT) from None
                except ConnectionError as error:
                    connection.abort()
                    if isinstance(error, BodyLengthError):
                        raise _Failed(BAD_REQUEST) from None
                    if body.disconnected:  # the client left mid-upload: nothing wrong upstream
                        raise _Failed(BAD_GATEWAY) from None
                    if replay and not connection.received and not body.started:
                        replay = False
                        connection = None
                        continue
                    log_fault("upstream failed", decision, node, error)
                    if checked:
                        health.report_fault(upstream, node, Outcome.TCP_FAILURE)
                    raise _Failed(BAD_GATEWAY) from None
                except BaseException:
                    connection.abort()  # cancelled: the connection is in an unknown state
                    raise
                if checked:
                    health.report_status(upstream, node, connection.status)
                return connection
        raise _Failed(fault)

    def _send_head(
        self, connection: Connection, upstream: Upstream, node: UpstreamNode, request: UpstreamRequest
    ) -> None:
        """Write a request without a body (most requests: no coroutine of its own)."""
        connection.begin(head_request=request.method == "HEAD")
        if request.content_length:
            # Announced, never delivered: a head waiting for it would take the next request.
            raise BodyLengthError
        connection.write(_head(request, request.host(upstream, node), request.framing(chunked=False)))

    async def _send(
        self,
        connection: Connection,
        upstream: Upstream,
        node: UpstreamNode,
        request: UpstreamRequest,
        body: _RequestBody,
        timeout: float,
    ) -> None:
        """Write a request with a body: head, then the body as it arrives (re-framed chunked when its
        length is unknown), waiting while the upstream is slower than the client (the ``send``
        timeout)."""
        host = request.host(upstream, node)
        connection.begin(head_request=request.method == "HEAD")
        length = request.content_length
        chunked = length is None
        expected = length or 0
        sent = 0
        pending: list[bytes] = [_head(request, host, request.framing(chunked=chunked))]
        async for chunk in body.chunks():
            if connection.head_done:
                # The upstream answered before taking the whole body: stop sending, and never reuse
                # a connection whose request was cut short.
                connection.keep_alive = False
                return
            if chunked:
                pending += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
            else:
                sent += len(chunk)
                if sent > expected:
                    raise BodyLengthError
                pending.append(chunk)
            connection.write(pending)
            pending = []
            body.started = True
            if connection.write_paused or connection.error is not None:
                await connection.drain(timeout)
        if chunked:
            pending.append(_LAST_CHUNK)
        elif sent != expected:
            raise BodyLengthError
        if pending:
            connection.write(pending)

    async def _relay(
        self,
        pool: UpstreamPool,
        connection: Connection,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        decision: Allow,
        exchange: Exchange,
        timeout: float,
    ) -> None:
        """Stream the upstream's response to the client; stop (and drop the upstream connection) if the
        client goes away."""
        status = connection.status
        exchange.status = status
        headers = response_headers(connection.headers)
        if status in _NO_BODY_STATUS:
            headers = [(name, value) for name, value in headers if name != b"content-length"]
        headers += decision.raw_response_headers  # the plugins' response phase
        start = {"type": "http.response.start", "status": status, "headers": headers, "trailers": False}
        if connection.done:  # the usual case: the whole response came in one read
            data = connection.take()
            pool.release(connection)
            exchange.sent = len(data)
            await send(start)  # type: ignore[arg-type]
            await send({"type": "http.response.body", "body": data, "more_body": False})
            return

        gone = finished = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] == "http.request":
                pass  # what is left of a body the upstream did not wait for
            if not finished:
                gone = True
                connection.interrupt()

        watcher: asyncio.Future[None] | None = None
        try:
            await send(start)  # type: ignore[arg-type]
            while True:
                data = connection.take()
                if connection.done:
                    finished = True
                    pool.release(connection)
                    exchange.sent += len(data)
                    await send({"type": "http.response.body", "body": data, "more_body": False})
                    return
                if data:
                    exchange.sent += len(data)
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                if gone:
                    return
                if watcher is None:
                    # More is coming: watch for the client leaving. Most answers fit one read and skip this.
                    watcher = asyncio.ensure_future(watch())
                try:
                    await connection.more(timeout)
                except (ConnectionError, TimeoutError) as error:
                    log_fault("upstream broke off the response", decision, exchange.node, error)
                    raise UpstreamAbortedError("upstream broke off the response") from None
                if gone:
                    return
        finally:
            if watcher is not None:
                watcher.cancel()
            if not finished:
                connection.abort()
