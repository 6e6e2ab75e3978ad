"""The WSGI forwarding proxy (``gateway.wsgi_proxy()``), on pooled ``http.client`` connections.

This module is long because one exchange (decide, connect, send, relay, fault answers) reads as one
story; the sans-IO request plan lives in ``_plan.py``.
"""

from __future__ import annotations

import http.client
import io
import re
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from consumer_auth.errors import UpstreamAbortedError
from consumer_auth.sansio.decision import Allow, Reject
from consumer_auth.sansio.upstream import Timeout, Upstream, UpstreamNode
from consumer_auth.wsgi import facts_from_environ

from ._balance import Balancers
from ._common import (
    Exchange,
    check_upstreams,
    checked_upstreams,
    default_upstream,
    log_fault,
    probe_tls,
    upstream_for,
)
from ._health import Health, Outcome, probe_request, probe_status
from ._plan import (
    BAD_GATEWAY,
    GATEWAY_TIMEOUT,
    IDEMPOTENT,
    TOO_LARGE,
    ClientRequest,
    UpstreamRequest,
    port_number,
    response_headers,
    upstream_request,
)
from ._pool import ConnectionPool, NodePool

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from consumer_auth.metrics import Metrics
    from consumer_auth.sansio.gateway import Gateway

__all__ = ["WSGIProxy"]

CHUNK = 65536
"""Bytes moved per read, both ways: the most a request in flight holds of a body."""


class _ClientGone(Exception):
    """The client stopped sending its request body (disconnected, or a broken ``wsgi.input``)."""


class _Stale(Exception):
    """A reused keep-alive connection had been closed by the upstream before it could answer."""


class _MalformedResponse(http.client.HTTPException):
    """The upstream's response head is malformed or its length ambiguous (http.client lets these by)."""


_LENGTH = re.compile(r"[0-9]+")
# The end of a response is checked for extra bytes once this little of it is left (a read buffer).
_PEEKABLE = io.DEFAULT_BUFFER_SIZE


def _check_head(response: http.client.HTTPResponse) -> None:
    """Refuse a response whose head http.client accepts leniently: lines it could not parse, control
    characters in a value, a ``Content-Length`` that is not one number, or one beside
    ``Transfer-Encoding`` (two ways to read the length: the client and this proxy could disagree)."""
    message = response.msg
    if message.defects:
        raise _MalformedResponse("unparsable header lines")
    if any(any(c in value for c in "\0\r\n") for value in message.values()):
        raise _MalformedResponse("a control character in a header value")
    lengths = message.get_all("Content-Length") or []
    if lengths and (len(lengths) > 1 or not _LENGTH.fullmatch(lengths[0].strip())):
        raise _MalformedResponse("a malformed Content-Length")
    if lengths and message.get_all("Transfer-Encoding"):
        raise _MalformedResponse("both Content-Length and Transfer-Encoding")


def _client(environ: WSGIEnvironment) -> ClientRequest:
    headers: list[tuple[bytes, bytes]] = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:]
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            name = key
        else:
            continue
        headers.append((name.lower().replace("_", "-").encode("latin-1"), value.encode("latin-1")))
    raw_path: bytes | None = None
    uri = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if uri and not environ.get("SCRIPT_NAME"):  # a mount point would make the raw path ambiguous
        raw_path = uri.partition("?")[0].encode("latin-1")
    return ClientRequest(
        headers=headers,
        scheme=environ.get("wsgi.url_scheme", "http"),
        peer=environ.get("REMOTE_ADDR") or None,
        server_port=port_number(environ.get("SERVER_PORT")),
        raw_path=raw_path,
        query=environ.get("QUERY_STRING", "").encode("latin-1"),
    )


class _TooLarge(Exception):
    """A chunked request body grew past its limit while it was being forwarded."""


def _read_beyond(response: http.client.HTTPResponse, connection: http.client.HTTPConnection) -> bool:
    """Whether bytes beyond the response's end were already read from the upstream (an answer to a
    request nobody sent on this connection): the connection is then never reused.

    Called while at most a buffer of the body is left (``http.client`` drops its read buffer with the
    response, so this is the last moment to look). With body bytes still to come, ``peek`` waits only
    as the next read would; with none, it does not wait at all.
    """
    fp = response.fp
    remaining = response.length
    sock = connection.sock
    if fp is None or remaining is None or sock is None or response.will_close:
        return False  # nothing buffered, or a connection that is closed after this response anyway
    if remaining:
        return len(fp.peek(remaining + 1)) > remaining
    timeout = sock.gettimeout()
    try:
        sock.settimeout(0)
        return bool(fp.peek(1))
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)


class _RequestBody:
    """Copies ``wsgi.input`` to the upstream connection, ``CHUNK`` bytes at a time (at most ``limit``)."""

    __slots__ = ("_input", "limit", "started")

    def __init__(self, stream: Any, limit: int | None = None) -> None:
        self._input = stream
        self.limit = limit
        self.started = False

    def _read(self, size: int) -> bytes:
        try:
            data: bytes = self._input.read(size)
        except Exception as error:  # servers raise their own types for a client that went away
            raise _ClientGone from error
        return data

    def copy(self, request: UpstreamRequest, connection: http.client.HTTPConnection) -> None:
        self.started = True
        if request.chunked:
            size = 0
            while data := self._read(CHUNK):
                size += len(data)
                if self.limit is not None and size > self.limit:
                    raise _TooLarge
                connection.send(b"%x\r\n%b\r\n" % (len(data), data))
            connection.send(b"0\r\n\r\n")
            return
        remaining = request.content_length or 0
        while remaining > 0:
            data = self._read(min(CHUNK, remaining))
            if not data:
                raise _ClientGone
            connection.send(data)
            remaining -= len(data)


class _ResponseBody:
    """The upstream's body as a WSGI iterable; ``close()`` gives the connection back or drops it."""

    __slots__ = ("_beyond", "_complete", "_connection", "_decision", "_exchange", "_pool", "_response")

    def __init__(
        self,
        response: http.client.HTTPResponse,
        connection: http.client.HTTPConnection,
        pool: NodePool,
        decision: Allow,
        exchange: Exchange,
    ) -> None:
        self._response = response
        self._connection = connection
        self._pool = pool
        self._decision = decision
        self._exchange = exchange
        self._complete = False
        self._beyond = False

    def __iter__(self) -> Iterator[bytes]:
        response = self._response
        try:
            while True:
                left = response.length
                if left is not None and left <= _PEEKABLE and not self._beyond:
                    self._beyond = _read_beyond(response, self._connection)
                chunk = response.read1(CHUNK)
                if not chunk:
                    break
                self._exchange.sent += len(chunk)
                yield chunk
            if response.length:  # fewer bytes than its Content-Length said: http.client does not raise
                raise http.client.IncompleteRead(b"", response.length)
        except (http.client.HTTPException, OSError) as error:
            log_fault("upstream broke off the response", self._decision, self._exchange.node, error)
            raise UpstreamAbortedError("upstream broke off the response") from None
        self._complete = True

    def close(self) -> None:
        response = self._response
        if self._complete and not response.will_close and not self._beyond:
            response.close()  # read to the end; http.client wants it closed before the next request
            self._pool.put(self._connection)
        else:
            self._connection.close()
        self._exchange.log()


class WSGIProxy:
    """A WSGI app that authenticates each request with a gateway and forwards the allowed ones upstream.

    Usually made with :meth:`Gateway.wsgi_proxy`. It follows exactly the rules of
    :class:`~consumer_auth.proxy.asgi.ASGIProxy` (same answers, same headers, same faults), with blocking
    I/O: keep-alive connections pooled per node, bodies copied ``CHUNK`` bytes at a time both ways, the
    socket timeout switched between the ``connect``, ``send`` and ``read`` timeouts of the upstream.
    Run it on a threaded WSGI server (each request holds a thread while it is forwarded).

    When the server tells the raw request line (``RAW_URI`` or ``REQUEST_URI``, as gunicorn, uWSGI and
    werkzeug do), its percent-encoding is forwarded unchanged; otherwise the path is re-encoded.

    Args:
        gateway: Decides every request.
        upstream: Default upstream (URL or mapping) for routes without one and for ``unmatched: pass``.
        metrics: Count requests, decisions, latencies and node health in these
            :class:`~consumer_auth.metrics.Metrics` (default: none, and nothing is measured).

    Raises:
        ConfigError: as :class:`~consumer_auth.proxy.asgi.ASGIProxy`.
    """

    def __init__(
        self,
        gateway: Gateway,
        *,
        upstream: Upstream | str | object | None = None,
        max_body_bytes: int | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.gateway = gateway
        self.max_body_bytes = max_body_bytes
        self.default_upstream = default_upstream(upstream)
        check_upstreams(gateway, self.default_upstream)
        self._balancers = Balancers()
        self._pool = ConnectionPool()
        self.health = Health()
        """The health of the nodes of upstreams with ``checks`` (probed by a daemon thread)."""
        self._metrics: Metrics | None = None
        self.metrics = metrics
        self._monitor: threading.Thread | None = None
        self._monitor_lock = threading.Lock()
        self._closed = threading.Event()
        self._watch_health()

    @property
    def metrics(self) -> Metrics | None:
        """Where requests and node health are counted (settable; ``None``: nowhere, at no cost)."""
        return self._metrics

    @metrics.setter
    def metrics(self, metrics: Metrics | None) -> None:
        self._metrics = metrics
        self.health.on_change = metrics.node_health if metrics is not None else None

    def close(self) -> None:
        """Close the idle upstream connections and stop the health probes."""
        self._closed.set()
        self._pool.close()

    # -- active health checks ------------------------------------------------------------------------

    def _watch_health(self) -> None:
        """Start the probing thread if an upstream has health checks and it is not running yet."""
        with self._monitor_lock:
            if self._monitor is not None or self._closed.is_set():
                return
            if not checked_upstreams(self.gateway, self.default_upstream):
                return
            self._monitor = threading.Thread(
                target=self._probe_loop, name="consumer-auth health checks", daemon=True
            )
            self._monitor.start()

    def _probe_loop(self) -> None:
        # Probes go one after the other: each is bounded by its timeout, and a node is probed again only
        # once its interval has passed after its previous probe ended.
        while not self._closed.is_set():
            upstreams = checked_upstreams(self.gateway, self.default_upstream)
            for upstream, node in self.health.due(upstreams, time.monotonic()):
                self.health.report_probe(upstream, node, _probe(upstream, node), time.monotonic())
            shortest = min(
                (
                    min(u.checks.active.healthy_interval, u.checks.active.unhealthy_interval)
                    for u in upstreams
                    if u.checks is not None
                ),
                default=1.0,
            )
            self._closed.wait(self.health.next_due(upstreams, time.monotonic(), shortest))

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
        exchange = Exchange(
            environ.get("REMOTE_ADDR"),
            environ.get("REQUEST_METHOD", "GET"),
            raw.partition("?")[0].encode("latin-1", "replace").decode("ascii", "backslashreplace"),
            self.gateway,
            self._metrics,
        )
        try:
            result = self._handle(environ, start_response, exchange)
        except BaseException:
            exchange.log()
            raise
        if not isinstance(result, _ResponseBody):
            exchange.log()
        return result

    def _reject(
        self, start_response: StartResponse, reject: Reject, method: str, exchange: Exchange
    ) -> list[bytes]:
        exchange.status = reject.status
        start_response(reject.status_line, list(reject.wsgi_headers))
        if method == "HEAD":
            return []
        exchange.sent = len(reject.body)
        return [reject.body]

    def _handle(
        self, environ: WSGIEnvironment, start_response: StartResponse, exchange: Exchange
    ) -> Iterable[bytes]:
        facts = facts_from_environ(environ)
        exchange.facts = facts
        decision = self.gateway.decide_now(facts)
        exchange.decision = decision
        if exchange.metrics is not None:
            exchange.decided = time.perf_counter()
        if isinstance(decision, Reject):
            return self._reject(start_response, decision, facts.method, exchange)
        upstream = upstream_for(decision, self.default_upstream)
        if upstream is None:  # only after routes were replaced at run time with one lacking an upstream
            log_fault("no upstream for this route", decision, None, None)
            return self._reject(start_response, BAD_GATEWAY, facts.method, exchange)
        request = upstream_request(facts, decision, _client(environ))
        if isinstance(request, Reject):  # a Connection header naming a framing header
            return self._reject(start_response, request, facts.method, exchange)
        limit = self.max_body_bytes
        if decision.route is not None and decision.route.max_body_bytes is not None:
            limit = decision.route.max_body_bytes
        if limit is not None and request.content_length is not None and request.content_length > limit:
            return self._reject(start_response, TOO_LARGE, facts.method, exchange)
        body = _RequestBody(environ.get("wsgi.input"), limit)
        if exchange.metrics is None:
            outcome = self._open(upstream, request, body, decision, exchange)
        else:
            started = time.perf_counter()
            outcome = self._open(upstream, request, body, decision, exchange)
            exchange.upstream_seconds = time.perf_counter() - started
        if isinstance(outcome, Reject):
            return self._reject(start_response, outcome, facts.method, exchange)
        response, connection, pool = outcome
        exchange.status = response.status
        try:
            phrase = response.reason or HTTPStatus(response.status).phrase
        except ValueError:
            phrase = "Unknown"
        headers = response_headers(
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.getheaders()
        )
        start_response(
            f"{response.status} {phrase}",
            [
                *((name.decode("latin-1"), value.decode("latin-1")) for name, value in headers),
                *decision.response_headers,  # the plugins' response phase
            ],
        )
        return _ResponseBody(response, connection, pool, decision, exchange)

    def _open(
        self,
        upstream: Upstream,
        request: UpstreamRequest,
        body: _RequestBody,
        decision: Allow,
        exchange: Exchange,
    ) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection, NodePool] | Reject:
        """Send the request to the first node that takes a connection; the response, or the fault's answer."""
        timeout = upstream.timeout
        fault = BAD_GATEWAY
        health = self.health
        checked = upstream.checks is not None
        if checked and self._monitor is None:
            self._watch_health()
        nodes = self._balancers.order(upstream, health.unhealthy(upstream))
        if not nodes:
            log_fault("every upstream node is unhealthy", decision, None, None)
            return BAD_GATEWAY
        for node in nodes:
            exchange.node = node
            pool = self._pool.for_node(upstream, node)
            host = request.host(upstream, node)
            # A reused connection the upstream closed meanwhile fails before any answer: a request that can
            # be replayed (no body sent yet, idempotent method) then goes once more on a new connection.
            for connection in pool.idle():
                try:
                    response = self._send(connection, request, host, body, timeout, reused=True)
                except _Stale:
                    break  # nothing was lost: try a new connection to the same node
                except _Failure as failure:
                    if checked:
                        failure.report(health, upstream, node)
                    return failure.answer(decision, node)
                if checked:
                    health.report_status(upstream, node, response.status)
                return response, connection, pool
            try:
                connection = pool.new(timeout.connect)
            except TimeoutError as error:
                fault = GATEWAY_TIMEOUT
                log_fault("upstream connect timeout", decision, node, error)
                if checked:
                    health.report_fault(upstream, node, Outcome.TIMEOUT)
                continue
            except OSError as error:
                fault = BAD_GATEWAY
                log_fault("upstream connection failed", decision, node, error)
                if checked:
                    health.report_fault(upstream, node, Outcome.TCP_FAILURE)
                continue
            try:
                response = self._send(connection, request, host, body, timeout, reused=False)
            except _Failure as failure:
                if checked:
                    failure.report(health, upstream, node)
                return failure.answer(decision, node)
            if checked:
                health.report_status(upstream, node, response.status)
            return response, connection, pool
        return fault

    @staticmethod
    def _send(
        connection: http.client.HTTPConnection,
        request: UpstreamRequest,
        host: bytes,
        body: _RequestBody,
        timeout: Timeout,
        *,
        reused: bool,
    ) -> http.client.HTTPResponse:
        sock = connection.sock
        try:
            sock.settimeout(timeout.send)
            connection.putrequest(
                request.method, request.target.decode("ascii"), skip_host=True, skip_accept_encoding=True
            )
            connection.putheader(b"host", host)
            for name, value in request.headers:
                connection.putheader(name, value)
            framing = request.framing(chunked=request.chunked)
            if framing is not None:
                connection.putheader(*framing)
            connection.endheaders()
            if request.has_body:
                body.copy(request, connection)
            sock.settimeout(timeout.read)
            response = connection.getresponse()
            _check_head(response)
            return response
        except BaseException as error:
            connection.close()
            if isinstance(error, _ClientGone):
                raise _Failure(None) from None
            if isinstance(error, _TooLarge):
                raise _Failure(None, too_large=True) from None
            if isinstance(error, TimeoutError):
                raise _Failure(error, timed_out=True) from None
            if isinstance(error, http.client.HTTPException | OSError):
                stale = isinstance(
                    error, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError
                )
                if reused and stale and not body.started and request.method in IDEMPOTENT:
                    raise _Stale from None
                raise _Failure(error) from None
            raise


class _Failure(Exception):
    """Sending or waiting for the response failed; :meth:`answer` logs it and says what the client gets."""

    def __init__(
        self, error: BaseException | None, *, timed_out: bool = False, too_large: bool = False
    ) -> None:
        self.error = error
        self.timed_out = timed_out
        self.too_large = too_large

    def report(self, health: Health, upstream: Upstream, node: UpstreamNode) -> None:
        """Tell the passive health checks (a client that left says nothing about the upstream)."""
        if self.error is not None:
            health.report_fault(upstream, node, Outcome.TIMEOUT if self.timed_out else Outcome.TCP_FAILURE)

    def answer(self, decision: Allow, node: UpstreamNode) -> Reject:
        if self.too_large:
            return TOO_LARGE
        if self.error is None:  # the client went away mid-upload: nobody to tell, nothing wrong upstream
            return BAD_GATEWAY
        if self.timed_out:
            log_fault("upstream timeout", decision, node, self.error)
            return GATEWAY_TIMEOUT
        log_fault("upstream failed", decision, node, self.error)
        return BAD_GATEWAY


def _probe(upstream: Upstream, node: UpstreamNode) -> Outcome | None:
    """Send one active health probe to ``node`` and say what it found."""
    checks = upstream.checks
    if checks is None:
        return None
    active = checks.active
    kind, server_name, context = probe_tls(upstream, node)
    deadline = time.monotonic() + active.timeout
    try:
        sock = socket.create_connection((node.host.strip("[]"), node.port), timeout=active.timeout)
        try:
            if context is not None:
                sock = context.wrap_socket(sock, server_hostname=server_name)
            if kind == "tcp":
                return Outcome.SUCCESS
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.sendall(probe_request(upstream, active, node))
            line = b""
            while b"\n" not in line and len(line) < 1024:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                data = sock.recv(1024)
                if not data:
                    break
                line += data
            return probe_status(active, line.partition(b"\n")[0])
        finally:
            sock.close()
    except TimeoutError:
        return Outcome.TIMEOUT
    except OSError:
        return Outcome.TCP_FAILURE
