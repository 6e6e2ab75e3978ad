"""The HTTP/1.1 front of ``consumer-auth serve``: an asyncio protocol on httptools that runs an ASGI app.

This module is long because one HTTP/1.1 connection's parsing, limits, keep-alive, pipelining and ASGI
request cycle are one state machine.

Requests are parsed by httptools (llhttp, the parser of Node.js) through its public
``HttpRequestParser``; each request runs the ASGI app once (``http`` scope, ASGI 3.0, spec 2.4), and a
websocket upgrade is handed to :mod:`consumer_auth._websocket_front`. The front enforces
:class:`~consumer_auth._limits.ServerLimits`:

- size limits on the request target (414), the request head and the number of headers (431), checked
  as bytes arrive, so a huge head is refused before it is buffered whole;
- a head timeout from the connection's opening (or the first byte of a further request) to the end of
  the head (408), a body stall timeout (408), a send stall timeout for clients that stop reading, and
  a keep-alive timeout for idle connections;
- a first-byte timeout, shorter than the head timeout: a new connection that sends nothing is closed
  without an answer;
- a cap on the connections one client address holds at once (IPv6 by /64, as brute-force limits
  count): a further connection is answered 503 and closed, so that one client cannot take the whole
  ``max_connections``; past ``max_connections`` connections or requests in progress, a request is 503;
- framing rules against request smuggling: a ``Transfer-Encoding`` other than a single ``chunked`` is
  501; ``Transfer-Encoding`` together with ``Content-Length``, more than one ``Host``, and a
  ``Connection`` header naming ``Content-Length``, ``Transfer-Encoding`` or ``Host`` are 400 (httptools
  refuses repeated or conflicting ``Content-Length`` itself). An upgrade other than a websocket is
  served as a plain request and the connection closes after it: the bytes that follow are never read
  as a request.

Every refusal answers ``{"error_msg": "<status> <phrase>"}`` and a newline, then closes the connection
gracefully: it stops writing, reads and discards what the client still sends for up to ``_LINGER``
seconds, then closes (closing at once with unread input makes the kernel reset the connection, which can
destroy the answer before the client reads it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools

from ._limits import ServerLimits
from .proxy._plan import connection_tokens, names_framing
from .sansio.plugins.brute_force import client_subject

__all__ = ["LOGGER", "HttpProtocol", "ServerState", "refusal_body"]

LOGGER = logging.getLogger("consumer_auth.server")
"""The server front's events: start and stop (INFO), refused requests and dropped connections (INFO,
the reason and the client address, nothing else), errors of the app (ERROR)."""

ACCESS_LOGGER = logging.getLogger("consumer_auth.server.access")
"""One line per request when the server's own access log is on (``admin``): peer, method, path, status."""

ASGIApp = Callable[..., Awaitable[None]]
"""An ASGI 3 application: ``await app(scope, receive, send)``."""

_LINGER = 2.0
_HIGH_WATER = 65536  # request body bytes buffered for the app before the front stops reading
_ASGI = {"version": "3.0", "spec_version": "2.4"}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_NO_BODY = frozenset({204, 304})
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})
_STATUS_LINES = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode()) for status in HTTPStatus
}


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing a request that is being refused."""


def refusal_body(status: int) -> bytes:
    """The body of a refusal by the server front: ``{"error_msg": "<status> <phrase>"}`` and a newline."""
    return (
        json.dumps({"error_msg": f"{status} {HTTPStatus(status).phrase}"}, separators=(",", ":")).encode()
        + b"\n"
    )


def _answer(status: int) -> bytes:
    phrase = HTTPStatus(status).phrase
    body = refusal_body(status)
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_ANSWERS = {status: _answer(status) for status in (400, 408, 413, 414, 431, 500, 501, 503)}
_INTERNAL_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 21\r\nconnection: close\r\n\r\nInternal Server Error"
)


class ServerState:
    """What the connections of one server share: the app, the limits, the open connections and the
    requests in progress, the per-client connection counts and the lifespan state.

    Args:
        app: The ASGI application.
        limits: The ``server:`` limits.
        root_path: The ASGI ``root_path`` of every request.
        access_log: Log one line per request (``ACCESS_LOGGER``); the proxy writes its own instead.
    """

    def __init__(
        self, app: ASGIApp, limits: ServerLimits, *, root_path: str = "", access_log: bool = False
    ) -> None:
        self.app = app
        self.limits = limits
        self.root_path = root_path
        self.access_log = access_log
        self.connections: set[Any] = set()  # HttpProtocol, H2Protocol, websocket sessions
        self.tasks: set[asyncio.Task[None]] = set()
        self.app_state: dict[str, Any] = {}
        self.open_by_client: dict[str, int] = {}
        self.capped: set[str] = set()  # clients whose refusal was logged since they reached their cap
        self.shutting_down = False
        self._date_second = -1
        self._date: list[tuple[bytes, bytes]] = []
        self._date_value = b""
        self._date_line = b""

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers every response gets first: ``date`` (computed once a second)."""
        now = int(time.time())
        if now != self._date_second:
            self._date_second = now
            self._date = [(b"date", formatdate(now, usegmt=True).encode("ascii"))]
        return self._date

    @property
    def date_line(self) -> bytes:
        """The ``date`` header line of an HTTP/1.1 response head."""
        date = self.default_headers[0][1]
        if date is not self._date_value:
            self._date_value = date
            self._date_line = b"date: " + date + b"\r\n"
        return self._date_line

    def busy(self) -> bool:
        """Whether connections or requests in progress have reached ``max_connections``."""
        limit = self.limits.max_connections
        return len(self.connections) >= limit or len(self.tasks) >= limit

    def start(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run one request's app as a task counted in :attr:`tasks`."""
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


def peer_and_local(transport: asyncio.BaseTransport) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """The ASGI ``client`` and ``server`` of a connection (``None`` when not an IP socket)."""
    found: list[tuple[str, int] | None] = []
    for name in ("peername", "sockname"):
        address = transport.get_extra_info(name)
        found.append(
            (str(address[0]), int(address[1])) if isinstance(address, tuple) and len(address) >= 2 else None
        )
    return found[0], found[1]


def log_app_error(error: BaseException) -> None:
    """Log an exception that escaped the app (the DropUpstreamAborted filter keeps one-line faults)."""
    LOGGER.error("Exception in ASGI application", exc_info=error)


class _Cycle:
    """One request and its response on an HTTP/1.1 connection, as the app sees them through ASGI."""

    __slots__ = (
        "app",
        "body",
        "chunked",
        "conn",
        "disconnected",
        "event",
        "expected",
        "head",
        "keep_alive",
        "more_body",
        "response_complete",
        "response_started",
        "scope",
        "status",
        "waiting_for_continue",
    )

    def __init__(self, conn: HttpProtocol, scope: dict[str, Any], keep_alive: bool, expect: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.body = bytearray()
        self.more_body = True
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.keep_alive = keep_alive
        self.waiting_for_continue = expect
        self.chunked = False
        self.expected: int | None = None  # the response's Content-Length, counted down
        self.head: bytes | None = None  # a response head not yet written (sent with the first body)
        self.status = 0
        self.event = asyncio.Event()
        self.app: ASGIApp | None = None  # the app of a pipelined request, chosen when it was parsed

    async def run(self, app: ASGIApp) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except BaseException as error:
            if not isinstance(error, asyncio.CancelledError):
                log_app_error(error)
            self._failed()
            if isinstance(error, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
        else:
            if not self.response_complete:
                self._failed()
        finally:
            if self.conn.state.access_log:
                self.conn.access(self)

    def _failed(self) -> None:
        """The app raised, or returned without finishing its response."""
        conn = self.conn
        if self.disconnected or conn.transport is None or conn.transport.is_closing():
            return
        if not self.response_started:
            self.status = 500
            conn.transport.write(_INTERNAL_ERROR)
            conn.transport.close()
        else:
            self._flush_head()
            conn.transport.close()  # the client sees a cut-off response, never a wrong one
        self.response_complete = True

    async def receive(self) -> dict[str, Any]:
        if self.waiting_for_continue and not self.conn.closing():
            self.conn.write(_CONTINUE)
            self.waiting_for_continue = False
        if not self.disconnected and not self.response_complete:
            self.conn.resume_reading()
            await self.event.wait()
            self.event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        message = {"type": "http.request", "body": bytes(self.body), "more_body": self.more_body}
        self.body.clear()
        return message

    async def send(self, message: MutableMapping[str, Any]) -> None:
        conn = self.conn
        if self.disconnected:
            return
        if conn.write_paused:
            await conn.drain()
            if self.disconnected:
                return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected an http.response.start message, got {kind!r}")
            self._start(message)
            return
        if self.response_complete:
            raise RuntimeError(f"the response is complete, got {kind!r}")
        if kind != "http.response.body":
            raise RuntimeError(f"expected an http.response.body message, got {kind!r}")
        body: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        parts: list[bytes] = []
        if self.head is not None:
            parts.append(self.head)
            self.head = None
        if self.expected == 0 and not self.chunked:  # HEAD, 204, 304: no body is written
            if body and self.scope["method"] != "HEAD" and self.status not in _NO_BODY:
                raise RuntimeError("response content longer than Content-Length")
        elif self.chunked:
            if body:
                parts += (b"%x\r\n" % len(body), body, b"\r\n")
            if not more:
                parts.append(_LAST_CHUNK)
        elif body:
            if self.expected is not None:
                self.expected -= len(body)
                if self.expected < 0:
                    raise RuntimeError("response content longer than Content-Length")
            parts.append(body)
        if parts:
            conn.write(parts[0] if len(parts) == 1 else b"".join(parts))
        if not more:
            if self.expected:
                raise RuntimeError("response content shorter than Content-Length")
            self.response_complete = True
            self.event.set()
            conn.response_complete(self)

    def _start(self, message: MutableMapping[str, Any]) -> None:
        status = int(message["status"])
        self.status = status
        self.response_started = True
        lines = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status, self.conn.state.date_line]
        count = 2
        length: int | None = None
        chunked = False
        for name, value in message.get("headers", ()):
            name = name.lower()
            if name in _FRAMING:
                if name == b"content-length":
                    if length is None:
                        length = int(value)
                elif name == b"transfer-encoding":
                    chunked = chunked or value.lower() == b"chunked"
                elif value.lower() == b"close":
                    self.keep_alive = False
            lines += (name, b": ", value, b"\r\n")
            count += 1
        if self.scope["method"] == "HEAD" or status in _NO_BODY:
            self.expected, self.chunked = 0, False
        elif chunked:
            self.chunked = True
        elif length is not None:
            self.expected = length
        else:
            self.chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
            count += 1
        lines.append(b"\r\n")
        head = b"".join(lines)
        if head.count(b"\n") != count + 1 or head.count(b"\r") != count + 1 or b"\x00" in head:
            raise RuntimeError("a response header holds a line break or NUL")
        # Written with the first body message when that comes in the same turn of the loop (one write,
        # one TCP segment for a small answer); else on the next turn, so streamed heads are not held.
        self.head = head
        self.conn.loop.call_soon(self._flush_head)

    def _flush_head(self) -> None:
        if self.head is not None:
            head, self.head = self.head, None
            if not self.disconnected:
                self.conn.write(head)


class HttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 client connection: httptools parsing with size limits, timeouts and strict framing,
    each request run through the ASGI app of ``state``."""

    def __init__(self, state: ServerState, loop: asyncio.AbstractEventLoop, *, tls: bool = False) -> None:
        self.state = state
        self.limits = state.limits
        self.loop = loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.scheme = "https" if tls else "http"
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.cycle: _Cycle | None = None  # the request whose body is being read (or the last one)
        self.current: _Cycle | None = None  # the request whose response is being written
        self.pipeline: deque[_Cycle] = deque()
        self.read_paused = False
        self.write_paused = False
        self._writable: asyncio.Event | None = None
        self._upgrade: str | None = None  # "websocket" while a websocket handshake is parsed
        self._no_more = False  # after an upgrade not taken: nothing further is read as a request
        self._expect = False
        self._head_bytes = 0  # raw bytes received while the head is incomplete (bounds buffering)
        self._head_size = 0  # the parsed head: request target, names and values
        self._headers_seen = 0
        self._in_head = True
        self._in_body = False
        self._refusal: tuple[int, str] | None = None
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._first_byte_timer: asyncio.TimerHandle | None = None
        self._keep_alive_timer: asyncio.TimerHandle | None = None
        # Timers are re-armed lazily: a timer that fires early for its deadline sets itself again for
        # what is left, so that a request costs no timer at all when it comes in one read.
        self._began = False  # a request head has begun and not completed
        self._body_seen = 0.0  # when the last body bytes arrived
        self._idle_since: float | None = None  # when the last response ended, while nothing has come
        self._subject: str | None = None  # counted against the per-client cap while set

    # -- connection ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        self.client, self.server = peer_and_local(transport)
        self.state.connections.add(self)
        if self.client is not None and not self._admit(client_subject(self.client[0])):
            return
        self._arm_head_timer()
        self._first_byte_timer = self.loop.call_later(self.limits.first_byte, self._first_byte_timed_out)

    def _admit(self, subject: str) -> bool:
        """Count this connection against its client's cap; over the cap, answer 503 and close."""
        counts = self.state.open_by_client
        held = counts.get(subject, 0)
        if held >= self.limits.per_client:
            if subject not in self.state.capped:  # once while the client stays at its cap
                self.state.capped.add(subject)
                LOGGER.info(
                    "refused connections: %d open from this client already (503 until one closes)",
                    held,
                    extra={"client": self._peer, "status": 503},
                )
            self._refused = True
            assert self.transport is not None  # noqa: S101 - set by connection_made
            self.transport.write(_ANSWERS[503])
            self.transport.close()
            return False
        counts[subject] = held + 1
        self._subject = subject
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        for timer in (
            self._head_timer,
            self._body_timer,
            self._send_timer,
            self._linger_timer,
            self._first_byte_timer,
            self._keep_alive_timer,
        ):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._send_timer = self._linger_timer = None
        self._first_byte_timer = self._keep_alive_timer = None
        subject, self._subject = self._subject, None
        if subject is not None:
            counts = self.state.open_by_client
            left = counts.get(subject, 1) - 1
            if left > 0:
                counts[subject] = left
            else:
                counts.pop(subject, None)
            if left < self.limits.per_client:
                self.state.capped.discard(subject)
        for cycle in (self.cycle, self.current, *self.pipeline):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.event.set()
        self.pipeline.clear()
        if self._writable is not None:
            self._writable.set()

    def eof_received(self) -> bool | None:
        if self._refused and self.transport is not None and not self.transport.is_closing():
            self.transport.close()  # the client has finished sending: the lingering close is over
        return None

    def data_received(self, data: bytes) -> None:
        if self._refused or self._no_more:
            return
        self._idle_since = None
        if self._first_byte_timer is not None:
            self._first_byte_timer.cancel()
            self._first_byte_timer = None
        if self._in_head:
            self._head_bytes += len(data)
        elif self._in_body:
            self._body_seen = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgraded(data[upgrade.args[0] :] if upgrade.args else b"")
            return
        except httptools.HttpParserError:
            refusal = self._refusal or (400, "invalid HTTP request")
            self._refuse(*refusal)
            return
        if self._in_head:
            if self._began:  # a head is incomplete: it has header_timeout from its first byte
                self._arm_head_timer()
                if self._head_bytes > self.limits.max_header_bytes:
                    self._refuse(431, f"request head over {self.limits.max_header_bytes} bytes")
        elif self._in_body and self._body_timer is None:
            self._body_seen = self.loop.time()
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self._writable is not None:
            self._writable.clear()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._send_stalled)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._writable is not None:
            self._writable.set()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    async def drain(self) -> None:
        """Wait until the transport's write buffer has room again (or the connection is gone)."""
        if self._writable is None:
            self._writable = asyncio.Event()
        if self.write_paused and self.transport is not None and not self.transport.is_closing():
            self._writable.clear()
            await self._writable.wait()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None and not self.transport.is_closing():
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None and not self.transport.is_closing():
            self.read_paused = False
            self.transport.resume_reading()

    def shutdown(self) -> None:
        """Graceful shutdown: an idle connection closes now, a busy one after its response."""
        if self.transport is None or self.transport.is_closing():
            return
        busy = self.current is not None and not self.current.response_complete
        if busy or self.pipeline:
            for cycle in (self.current, self.cycle, *self.pipeline):
                if cycle is not None:
                    cycle.keep_alive = False
        else:
            self.transport.close()

    @property
    def _peer(self) -> str | None:
        return self.client[0] if self.client else None

    def access(self, cycle: _Cycle) -> None:
        scope = cycle.scope
        ACCESS_LOGGER.info(
            '%s - "%s %s HTTP/%s" %d',
            "{}:{}".format(*scope["client"]) if scope.get("client") else "-",
            scope["method"],
            scope["path"],
            scope["http_version"],
            cycle.status,
        )

    # -- parser callbacks --------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._began = True
        self.url = b""
        self.headers = []
        self._expect = False

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._head_size += len(url)
        if len(self.url) > self.limits.max_url_bytes:
            self._stop(414, f"request target over {self.limits.max_url_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers_seen += 1
        if self._headers_seen > self.limits.max_headers:
            self._stop(431, f"more than {self.limits.max_headers} header fields")
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.limits.max_header_bytes:
            self._stop(431, f"request head over {self.limits.max_header_bytes} bytes")
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        encodings: list[bytes] = []
        length = False
        hosts = 0
        listed: set[bytes] = set()
        upgrade = b""
        for name, value in self.headers:
            if name == b"host":
                hosts += 1
            elif name == b"transfer-encoding":
                encodings.append(value)
            elif name == b"content-length":
                length = True
            elif name == b"connection":
                listed |= connection_tokens(value)
            elif name == b"upgrade":
                upgrade = value.strip().lower()
        if encodings:
            if length:
                self._stop(400, "both Transfer-Encoding and Content-Length")
            if len(encodings) > 1 or encodings[0].strip().lower() != b"chunked":
                self._stop(501, "a Transfer-Encoding other than chunked")
        if hosts > 1:
            self._stop(400, "more than one Host header")
        if listed and names_framing(listed):
            self._stop(400, "Connection names a framing header")
        self._in_head = False
        self._in_body = True
        self._cancel(self._head_timer)
        self._head_timer = None

        parser = self.parser
        method = parser.get_method().decode("ascii")
        version = parser.get_http_version()
        if parser.should_upgrade() and upgrade == b"websocket" and method == "GET":
            self._upgrade = "websocket"
            return
        try:
            url = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            self._stop(400, "an invalid request target")
        raw_path = url.path or b"/"
        path = raw_path.decode("ascii", "surrogateescape")
        if "%" in path:
            path = unquote(path, errors="surrogateescape")
        root = self.state.root_path
        scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": method,
            "root_path": root,
            "path": root + path,
            "raw_path": root.encode("ascii") + raw_path if root else raw_path,
            "query_string": url.query or b"",
            "headers": self.headers,
            "state": self.state.app_state.copy(),
        }
        keep_alive = parser.should_keep_alive() and not parser.should_upgrade()
        cycle = _Cycle(self, scope, keep_alive, self._expect)
        self.cycle = cycle
        app = self.state.app
        if self.state.busy():
            app = _busy
        if self.current is None or self.current.response_complete:
            self.current = cycle
            self.state.start(cycle.run(app))
        else:  # pipelined: answered in order, after the one in progress
            self.pause_reading()
            self.pipeline.append(cycle)
            cycle.app = app

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle is None or cycle.response_complete or cycle.disconnected:
            return
        cycle.body += body
        if len(cycle.body) > _HIGH_WATER:
            self.pause_reading()
        cycle.event.set()

    def on_message_complete(self) -> None:
        self._began = self._in_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        # The next bytes on this connection start a new request head.
        self._in_head = True
        self._head_bytes = self._head_size = self._headers_seen = 0
        cycle = self.cycle
        if self._upgrade is not None or cycle is None:
            return
        cycle.more_body = False
        cycle.event.set()
        if cycle.response_complete and cycle is self.current and not self.pipeline and cycle.keep_alive:
            self._idle()  # answered before its body was read; the body is read now, the next may come

    # -- responses, keep-alive, pipelining ---------------------------------------------------------

    def response_complete(self, cycle: _Cycle) -> None:
        """The app finished ``cycle``'s response: close, or start the next pipelined request, or wait."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not cycle.keep_alive or self._no_more:
            if cycle.more_body and not cycle.disconnected and transport.can_write_eof():
                # A body the app did not read: read and drop it while closing, as after a refusal.
                self._lingering_close()
            else:
                transport.close()
            return
        if cycle.more_body:
            # The app answered before reading the whole body: what is left is read and dropped, and the
            # next request on the connection starts after it.
            cycle.disconnected = True
            self.resume_reading()
            return
        self.resume_reading()
        if self.pipeline:
            following = self.pipeline.popleft()
            self.current = following
            self.state.start(following.run(following.app or self.state.app))
        else:
            self._idle()

    def _idle(self) -> None:
        """The connection waits for a further request: it closes after ``keep_alive_timeout``."""
        self._idle_since = self.loop.time()
        if self._keep_alive_timer is None:
            self._keep_alive_timer = self.loop.call_later(
                self.limits.keep_alive_timeout, self._keep_alive_over
            )

    def _keep_alive_over(self) -> None:
        self._keep_alive_timer = None
        if self._idle_since is None or self.closing():
            return  # a request came meanwhile: its response's end arms the timer again
        left = self._idle_since + self.limits.keep_alive_timeout - self.loop.time()
        if left > 0.001:
            self._keep_alive_timer = self.loop.call_later(left, self._keep_alive_over)
        elif self.transport is not None:
            self.transport.close()

    def _upgraded(self, trailing: bytes) -> None:
        """The parser stopped at an upgrade: a websocket handshake, or an upgrade that is not taken."""
        if self._upgrade != "websocket":
            # Served as a plain request (its on_message_complete has run); the connection closes after it.
            self._no_more = True
            for cycle in (self.current, self.cycle, *self.pipeline):
                if cycle is not None:
                    cycle.keep_alive = False
            idle = self.current is None or self.current.response_complete
            if idle and self.transport is not None:
                self.transport.close()
            return
        if self.current is not None and not self.current.response_complete:
            # A handshake pipelined behind a request in progress: refused rather than queued.
            self._refuse(400, "a websocket handshake pipelined behind another request")
            return
        if self.state.busy():
            self._refuse(503, "more connections and requests in progress than max_connections")
            return
        self._in_body = False
        self._cancel(self._body_timer)
        self._body_timer = None
        try:
            from ._websocket_front import WebSocketSession
        except ImportError:
            self._refuse(501, "websockets need the websockets library")
            return
        assert self.transport is not None  # noqa: S101 - data arrives on a connected transport
        session = WebSocketSession(
            self.state,
            self.transport,
            self.loop,
            method="GET",
            target=self.url,
            headers=self.headers,
            client=self.client,
            server=self.server,
            secure=self.scheme == "https",
            on_close=self._session_closed,
        )
        self._refused = True  # this protocol reads nothing more; the session does
        for timer in (self._head_timer, self._first_byte_timer, self._keep_alive_timer):
            self._cancel(timer)
        self._head_timer = self._first_byte_timer = self._keep_alive_timer = None
        self.state.connections.discard(self)
        self.transport.set_protocol(session)
        session.start(trailing)

    def _session_closed(self) -> None:
        self.connection_lost(None)

    # -- refusals and timers -----------------------------------------------------------------------

    def _stop(self, status: int, why: str) -> None:
        self._refusal = (status, why)
        raise _Refused(why)

    def _refuse(self, status: int, why: str) -> None:
        if self._refused:
            return
        self._refused = True
        LOGGER.info("refused a request: %s (%d)", why, status, extra={"client": self._peer, "status": status})
        transport = self.transport
        if transport is None:
            return
        for cycle in (self.cycle, self.current, *self.pipeline):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True  # the app's further sends and receives end here
                cycle.event.set()
                if cycle.response_started:
                    transport.abort()
                    return
        self.pipeline.clear()
        if transport.is_closing():
            return
        transport.write(_ANSWERS[status])
        self._lingering_close()

    def _lingering_close(self) -> None:
        transport = self.transport
        if transport is None:
            return
        self._refused = True
        if transport.can_write_eof():
            transport.write_eof()
            self.resume_reading()
            self._linger_timer = self.loop.call_later(
                min(_LINGER, self.limits.header_timeout), self._linger_over
            )
        else:
            transport.close()

    def _linger_over(self) -> None:
        self._linger_timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.closing():
            if self._head_bytes == 0 and (self.current is None or self.current.response_complete):
                self._drop("no request within the header timeout")
            elif self._head_bytes == 0:
                return  # a response is in progress; the next request has not begun
            else:
                self._refuse(408, "request head not complete within the header timeout")

    def _first_byte_timed_out(self) -> None:
        self._first_byte_timer = None
        if self._head_bytes == 0 and self.current is None and not self.closing():
            self._drop("no byte within the first-byte timeout")

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if not self._in_body or self.closing():
            return
        timeout = self.limits.body_timeout
        if self.read_paused:  # we stopped reading (the app is slow), not the client
            self._body_timer = self.loop.call_later(timeout, self._body_timed_out)
            return
        left = self._body_seen + timeout - self.loop.time()
        if left > 0.001:
            self._body_timer = self.loop.call_later(left, self._body_timed_out)
            return
        self._refuse(408, "request body stalled")

    def _send_stalled(self) -> None:
        self._send_timer = None
        # Also when closing: a closing transport waits for its buffer to drain, which never happens.
        if self.write_paused:
            self._drop("client stopped reading the response")

    def _drop(self, why: str) -> None:
        LOGGER.info("dropped a connection: %s", why, extra={"client": self._peer})
        for cycle in (self.cycle, self.current, *self.pipeline):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.event.set()
        self._refused = True
        if self.transport is not None:
            self.transport.abort()

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()


async def _busy(scope: Any, receive: Any, send: Any) -> None:
    """The app of a request past ``max_connections``: 503, the connection closed after it."""
    body = refusal_body(503)
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
