"""The ASGI forwarder's upstream client: keep-alive HTTP/1.1 connections on asyncio protocols.

This module is long because a connection's states (head, body, flow control both ways, reuse) are one
state machine, read best in one place.

Responses are parsed by httptools (llhttp, the parser uvicorn uses). One :class:`Connection` carries one
exchange at a time; :class:`UpstreamPool` keeps the idle ones of one event loop per node and TLS setting.
Nothing here knows about ASGI or the gateway: ``asgi.py`` writes the request head and body, waits for the
response head, and moves the body on with :meth:`Connection.take` and :meth:`Connection.more`.

Flow control both ways keeps memory bounded whatever the body size:

- request body: after each write the sender waits (:meth:`Connection.drain`) while the transport's buffer
  is above its high-water mark, so at most about one chunk plus that buffer is held;
- response body: when more than :data:`HIGH_WATER` bytes are waiting for the client, reading from the
  upstream pauses until :meth:`Connection.take` hands them over.

Timeouts are the upstream's ``send`` (for each wait in :meth:`Connection.drain`) and ``read`` (for each
wait for response bytes: the longest between two reads); :meth:`UpstreamPool.connect` applies
``connect``.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Final, cast

import httptools

__all__ = [
    "HIGH_WATER",
    "IDLE_SECONDS",
    "MAX_FIELD",
    "MAX_HEAD",
    "MAX_HEADERS",
    "Connection",
    "PoolKey",
    "UpstreamClosedError",
    "UpstreamPool",
    "UpstreamProtocolError",
]

HIGH_WATER: Final = 256 * 1024
"""Response bytes held for the client before reading from the upstream pauses."""

MAX_HEAD: Final = 64 * 1024
"""The most bytes a response head (with any interim answers before it) may take: beyond, the answer is
refused, as nginx refuses an upstream header larger than its buffer. llhttp itself sets no limit."""

MAX_FIELD: Final = 8190
"""The longest header field (name and value) of a response, as in aiohttp and uvicorn's own limits."""

MAX_HEADERS: Final = 128
"""The most header fields one response head may have."""

IDLE_SECONDS: Final = 15.0
"""An idle keep-alive connection is closed after this long (upstreams time idle ones out too)."""

PoolKey = tuple[str, str, int, str | None, ssl.SSLContext | None]
"""(scheme, host, port, TLS server name, TLS context) of a node: which connections may serve a request
(the TLS parts are None for http)."""


class UpstreamClosedError(ConnectionError):
    """The upstream closed or reset the connection before the response was complete."""


class UpstreamProtocolError(ConnectionError):
    """The upstream answered something that is not an HTTP/1.x response."""


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Connection(asyncio.Protocol):
    """One upstream connection and the state of the exchange it carries.

    The parser callbacks (``on_*``) and the protocol callbacks only record what happened and wake the
    task waiting on the connection (there is at most one); that task reads the state and decides.
    """

    __slots__ = (
        "_chunks",
        "_deadline",
        "_interim",
        "_loop",
        "_parser",
        "_reading_paused",
        "_stale_parser",
        "_timer",
        "_timer_at",
        "_waiter",
        "busy",
        "buffered",
        "closed",
        "done",
        "error",
        "head_done",
        "head_request",
        "head_size",
        "head_unfinished",
        "headers",
        "idle_since",
        "keep_alive",
        "key",
        "received",
        "status",
        "transport",
        "write_paused",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, key: PoolKey) -> None:
        self._loop = loop
        self.key = key
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._stale_parser = False
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline = 0.0
        self._reading_paused = False
        self.closed = False
        self.busy = False
        self.write_paused = False
        self.idle_since = 0.0
        self._reset(head_request=False)

    def _reset(self, *, head_request: bool) -> None:
        self.head_request = head_request
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._interim = False
        self.head_done = False
        self.head_size = 0
        self.head_unfinished = 0
        self.done = False
        self.keep_alive = False
        self.error: ConnectionError | None = None
        self._chunks: list[bytes] = []
        self.buffered = 0
        self.received = False

    # -- the exchange, from the forwarding task ----------------------------------------------------

    def begin(self, *, head_request: bool) -> None:
        """Start an exchange (the request is written next, with :meth:`write`)."""
        if self._stale_parser:  # after a HEAD the parser still expects the body the headers announced
            self._parser = httptools.HttpResponseParser(self)
            self._stale_parser = False
        self._reset(head_request=head_request)
        self.busy = True

    def write(self, data: bytes | list[bytes]) -> None:
        """Send bytes (one buffer, or several in one system call).

        Raises:
            ConnectionError: the connection is gone (the transport would refuse the write).
        """
        if self.closed or self.transport is None:
            raise self.error or UpstreamClosedError("the upstream closed the connection")
        if isinstance(data, bytes):
            self.transport.write(data)
        else:
            self.transport.writelines(data)

    async def drain(self, timeout: float) -> None:
        """Wait while the transport holds too much unsent data (the ``send`` timeout applies).

        Returns early when the upstream has answered already; raises the connection's error.
        """
        while self.write_paused and not self.head_done and self.error is None:
            await self._wait(timeout)
        if self.error is not None:
            raise self.error

    async def response_head(self, timeout: float) -> None:
        """Wait for the response's status and headers (the ``read`` timeout applies between reads)."""
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._wait(timeout)

    def take(self) -> bytes:
        """The response body bytes received so far (reading resumes if it was paused)."""
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self.buffered = 0
        if self._reading_paused:
            self._reading_paused = False
            if not self.closed and self.transport is not None:
                self.transport.resume_reading()
        return data

    async def more(self, timeout: float) -> None:
        """Wait until more of the body arrived, or all of it (the ``read`` timeout applies)."""
        while not self._chunks and not self.done:
            if self.error is not None:
                raise self.error
            await self._wait(timeout)

    def interrupt(self) -> None:
        """Wake the task waiting on this connection (it then checks why, e.g. the client left)."""
        self._wake()

    def abort(self) -> None:
        """Drop the connection at once (an exchange that cannot finish cleanly)."""
        self.busy = False
        self._stop_timer()
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.closed = True

    def _wait(self, timeout: float) -> asyncio.Future[None]:
        """A future that the next event on the connection completes, or the timeout fails (awaited
        directly by the caller: one coroutine fewer between the task and the event loop)."""
        loop = self._loop
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        deadline = loop.time() + timeout
        self._deadline = deadline
        # One timer serves the waits of many exchanges: it is armed when none is, or when it would fire
        # after this wait's deadline, and when it fires early for the current wait it is set again for
        # what is left (a wait costs no timer of its own; the front's timers work the same way).
        if self._timer is None or self._timer_at > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(deadline, self._deadline_reached)
            self._timer_at = deadline
        return waiter  # left in _waiter once done: waking a done future does nothing

    def _deadline_reached(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # no wait in progress: the next one arms the timer again
        if self._deadline - self._loop.time() > 0.001:
            self._timer = self._loop.call_at(self._deadline, self._deadline_reached)
            self._timer_at = self._deadline
            return
        _expire(waiter)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _refuse(self, why: str) -> None:
        """The upstream's answer cannot be used: stop reading it, and never reuse the connection."""
        self.keep_alive = False
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._fail(UpstreamProtocolError(why))

    def _fail(self, error: ConnectionError) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    # -- asyncio protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # a stream connection

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.done:
            # Bytes nobody asked for (on an idle connection, or after the response): not reusable.
            self.keep_alive = False
            if not self.busy and self.transport is not None:
                self.transport.abort()
            return
        if self.error is not None:
            return  # the exchange failed: nothing more is read (the task waiting will drop the connection)
        self.received = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._refuse("the upstream's answer is not HTTP/1.x")
            return
        if not self.head_done:
            # Reads that leave the head unfinished hold only head bytes (the parser buffers a header
            # cut between reads): they count against the limit as well as the fields parsed.
            self.head_unfinished += len(data)
            if self.head_unfinished > MAX_HEAD and self.error is None:
                self._refuse("the upstream's response head is too large")
                return
        elif self.buffered > HIGH_WATER and not self.done and not self._reading_paused:
            self._reading_paused = True
            if self.transport is not None:
                self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # close our side too: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        if self.busy and not self.done:
            if exc is None and self.head_done and self._until_eof():
                self.done = True  # a body without length ends with the connection
            else:
                error = UpstreamClosedError("the upstream closed the connection")
                error.__cause__ = exc
                self._fail(error)
        self._wake()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake()

    def _until_eof(self) -> bool:
        """Whether the response body is delimited by the end of the connection (no length, not chunked)."""
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length":
                return False
            if lowered == b"transfer-encoding" and value.strip().lower().endswith(b"chunked"):
                return False
        return True

    # -- httptools callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.done:
            # Bytes of another answer after this exchange's response (in the same read): the upstream
            # answered a request nobody sent on this connection. Never reuse it.
            self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:  # the trailers of a chunked body: they are not passed on
            return
        size = len(name) + len(value)
        self.head_size += size + 4
        if size > MAX_FIELD or len(self.headers) >= MAX_HEADERS:
            self.head_size = MAX_HEAD + 1  # refused when the head is complete (or too long to wait for)
        elif self.head_size <= MAX_HEAD:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_size += 32  # the status line: an endless series of interim answers is refused too
        if self.head_size > MAX_HEAD:
            self._refuse("the upstream's response head is too large (or a field too long, or too many)")
            return
        status = self._parser.get_status_code()
        if status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the final one follows on this stream.
            self.headers = []
            self._interim = True
            return
        if self.head_done:  # a second response to one request
            self._refuse("the upstream answered twice")
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        self.head_done = True
        if self.head_request:
            # A response to HEAD has no body, whatever its headers announce; llhttp cannot be told so.
            self.done = True
            self._stale_parser = True

    def on_body(self, body: bytes) -> None:
        if self.done:  # a body after a HEAD response
            self.keep_alive = False
            return
        self._chunks.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.done = True


class UpstreamPool:
    """The keep-alive connections of one event loop, idle ones per :data:`PoolKey`.

    Connections are not capped (as in nginx, the upstream's own limits apply); idle ones are reused
    newest first and closed after :data:`IDLE_SECONDS`.
    """

    __slots__ = ("_closed", "_idle", "_loop", "_sweeper")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._idle: dict[PoolKey, list[Connection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    def pooled(self, key: PoolKey) -> Connection | None:
        """An idle connection to ``key`` that is still open, if there is one."""
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
        return None

    async def connect(self, key: PoolKey, timeout: float) -> Connection:
        """A new connection: TLS with the key's context and server name (SNI) when it has a context.

        Raises:
            TimeoutError: not connected within ``timeout`` seconds.
            OSError: refused, unreachable, or the TLS handshake failed.
        """
        _, host, port, server_name, tls = key
        address = host[1:-1] if host.startswith("[") else host
        loop = self._loop
        async with asyncio.timeout(timeout):
            _, connection = await loop.create_connection(
                lambda: Connection(loop, key),
                address,
                port,
                ssl=tls,
                server_hostname=server_name if tls is not None else None,
            )
        return connection

    def release(self, connection: Connection) -> None:
        """Take a connection back after its exchange: kept when it can carry another, else closed."""
        connection.busy = False
        if self._closed or connection.closed or not connection.keep_alive or not connection.done:
            connection.abort()
            return
        connection.idle_since = self._loop.time()
        idle = self._idle.get(connection.key)
        if idle is None:
            self._idle[connection.key] = [connection]
        else:
            idle.append(connection)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(IDLE_SECONDS, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self._loop.time()
        oldest: float | None = None
        for key, idle in list(self._idle.items()):
            kept = []
            for connection in idle:  # oldest first
                if connection.closed:
                    continue
                if now - connection.idle_since >= IDLE_SECONDS:
                    connection.abort()
                else:
                    kept.append(connection)
            if kept:
                self._idle[key] = kept
                first = kept[0].idle_since
                oldest = first if oldest is None else min(oldest, first)
            else:
                del self._idle[key]
        if oldest is not None:
            self._sweeper = self._loop.call_later(max(oldest + IDLE_SECONDS - now, 0.1), self._sweep)

    def close(self) -> None:
        """Close every idle connection; connections in use are closed when their exchange ends."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for connection in idle:
                transport = connection.transport
                if transport is not None and not connection.closed:
                    if transport.get_extra_info("sslcontext") is not None:
                        # A TLS close waits for the upstream's close_notify, which the event loop,
                        # shutting down, would not live to see: nothing is in flight, so drop it.
                        transport.abort()
                    else:
                        transport.close()
        self._idle.clear()
