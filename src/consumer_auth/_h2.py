"""HTTP/2 for ``consumer-auth serve`` over TLS (ALPN ``h2``), on the ``h2`` library, with the limits of
the HTTP/1.1 front.

This module is long because an HTTP/2 connection's frames, streams and limits are one state machine.

When ``serve`` terminates TLS, :class:`AlpnProtocol` takes each connection: once the handshake has chosen
``h2`` the connection is served by :class:`H2Protocol`, otherwise by the HTTP/1.1 front
(:mod:`consumer_auth._server`). The
framing, HPACK and flow-control rules are the ``h2`` library's (python-hyper's, the one hypercorn and
httpx use); this module maps streams to ASGI and applies :class:`~consumer_auth._limits.ServerLimits`:

- ``SETTINGS``: at most :data:`MAX_STREAMS` concurrent streams (more is a connection error, as the
  RFC allows), a header list of at most ``max_header_bytes`` (larger is a connection error: HPACK
  cannot skip it), frames of at most 16 KiB, no server push;
- per stream: a request target over ``max_url_bytes`` is 414, more than ``max_headers`` fields 431,
  ``CONNECT`` 501 (there is no tunnelling), every refusal with the same ``{"error_msg": ...}`` body as
  HTTP/1.1;
- timeouts: ``header_timeout`` for the first request after the connection opens,
  ``keep_alive_timeout`` while no stream is open, ``body_timeout`` for a stalled request body (408, or
  a reset once the response started), ``send_timeout`` for a client that leaves the response unread
  (its flow-control window closed, or the socket's buffer full);
- a client that resets more than :data:`MAX_RESETS` streams on one connection is sent ``GOAWAY``
  (``ENHANCE_YOUR_CALM``): the "rapid reset" flood costs it its connection;
- ``max_connections`` counts connections and streams in progress together, as the HTTP/1.1 front
  counts connections and requests: past it a new stream is 503.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from ._server import LOGGER, HttpProtocol, ServerState, log_app_error, peer_and_local, refusal_body

__all__ = ["MAX_RESETS", "MAX_STREAMS", "AlpnProtocol", "H2Protocol"]

MAX_STREAMS = 100
"""Concurrent streams a client may open on one connection (the ``SETTINGS_MAX_CONCURRENT_STREAMS``)."""

MAX_RESETS = 1000
"""Streams a client may reset on one connection before the connection is closed."""

_FRAME = 16384
_LINGER = 1.0
# Connection-specific headers never appear in HTTP/2 (RFC 9113 §8.2.2): dropped from the app's answer.
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


class _Stream:
    """One request/response exchange on the connection, seen by the app through ASGI."""

    __slots__ = (
        "body",
        "body_timer",
        "closed",
        "end_delivered",
        "ended",
        "headers_sent",
        "id",
        "response_done",
        "start",
        "task",
        "unacknowledged",
        "wakeup",
    )

    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.body: list[tuple[bytes, int]] = []  # chunks not yet received by the app, with their window size
        self.unacknowledged = 0
        self.ended = False  # the client has sent its whole body
        self.end_delivered = False  # the app has received the body's last message
        self.closed = False  # reset, or the connection is gone: the app's sends end here
        self.start: dict[str, Any] | None = None
        self.headers_sent = False
        self.response_done = False
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.body_timer: asyncio.TimerHandle | None = None


class H2Protocol(asyncio.Protocol):
    """An HTTP/2 server connection that runs the server's ASGI app once per stream."""

    def __init__(self, state: ServerState, loop: asyncio.AbstractEventLoop) -> None:
        self.state = state
        self.app = state.app
        limits = state.limits
        self.limits = limits
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_bytes,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: _FRAME,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            },
        )
        self.streams: dict[int, _Stream] = {}
        self.resets = 0
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.write_paused = False
        self.writable = asyncio.Event()
        self.writable.set()
        self.idle_timer: asyncio.TimerHandle | None = None
        self.send_timer: asyncio.TimerHandle | None = None
        self.closing = False
        self.lingering: asyncio.TimerHandle | None = None

    # -- connection --------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.connections.add(self)
        self.client, self.server = peer_and_local(transport)
        self.conn.initiate_connection()
        self._flush()
        self._arm_idle(self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        self.closing = True
        for timer in (self.idle_timer, self.send_timer, self.lingering):
            if timer is not None:
                timer.cancel()
        for stream in self.streams.values():
            self._close_stream(stream)
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        if self.lingering is not None:
            return  # a GOAWAY went out: what the client still sends is read and dropped
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            # h2 has queued the GOAWAY that says why; send it and close.
            LOGGER.info(
                "refused an HTTP/2 connection: %s", type(error).__name__, extra={"client": self._peer}
            )
            self._flush()
            self._linger()
            return
        for event in events:
            if self.lingering is not None:
                return
            if isinstance(event, h2.events.RequestReceived):
                self._request(event)
            elif isinstance(event, h2.events.DataReceived):
                self._data(event)
            elif isinstance(event, h2.events.StreamEnded):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.ended = True
                    self._cancel_body_timer(stream)
                    stream.wakeup.set()
            elif isinstance(event, h2.events.StreamReset):
                self._reset_by_client(event.stream_id)
            elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                for stream in self.streams.values():
                    stream.wakeup.set()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._close()
                return
        self._flush()

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        self.writable.clear()
        if self.send_timer is None:
            self.send_timer = self.loop.call_later(self.limits.send_timeout, self._send_stalled)

    def resume_writing(self) -> None:
        self.write_paused = False
        self.writable.set()
        if self.send_timer is not None:
            self.send_timer.cancel()
            self.send_timer = None

    def shutdown(self) -> None:
        """Graceful shutdown: no new streams; the connection closes when the last one ends."""
        if self.closing:
            return
        self.conn.close_connection()
        self._flush()
        self.closing = True
        if not self.streams:
            self._close()

    # -- streams -----------------------------------------------------------------------------------

    @property
    def _peer(self) -> str | None:
        return self.client[0] if self.client else None

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        if stream_id is None:
            return
        self._cancel_idle()
        stream = _Stream(stream_id)
        self.streams[stream_id] = stream
        if event.stream_ended is not None:
            stream.ended = True
        pseudo: dict[bytes, bytes] = {}
        headers: list[tuple[bytes, bytes]] = []
        cookies: list[bytes] = []
        size = 0
        count = 0
        for raw_name, raw_value in event.headers or ():
            name, value = bytes(raw_name), bytes(raw_value)
            size += len(name) + len(value) + 4
            if name.startswith(b":"):
                pseudo[name] = value
                continue
            count += 1
            if name == b"cookie":
                cookies.append(value)
            elif name != b"host":
                headers.append((name, value))
        method = pseudo.get(b":method", b"GET").decode("ascii", "replace")
        path = pseudo.get(b":path", b"")
        authority = pseudo.get(b":authority")
        if authority is None:
            authority = next((bytes(v) for n, v in event.headers or () if bytes(n) == b"host"), None)
        if len(path) > self.limits.max_url_bytes:
            self._refuse(stream, 414, f"request target over {self.limits.max_url_bytes} bytes")
            return
        if size > self.limits.max_header_bytes:
            self._refuse(stream, 431, f"request head over {self.limits.max_header_bytes} bytes")
            return
        if count > self.limits.max_headers:
            self._refuse(stream, 431, f"more than {self.limits.max_headers} header fields")
            return
        if method == "CONNECT":
            self._refuse(stream, 501, "CONNECT over HTTP/2")
            return
        if not path.startswith(b"/"):
            self._refuse(stream, 400, "a request target that is not a path")
            return
        if self.state.busy():
            self._refuse(
                stream, 503, "more connections and requests in progress than max_connections", log=False
            )
            return
        if authority is not None:
            headers.insert(0, (b"host", authority))
        if cookies:
            headers.append((b"cookie", b"; ".join(cookies)))  # RFC 9113 §8.2.3, for HTTP/1.1 upstreams
        raw_path, _, query = path.partition(b"?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "2",
            "server": self.server,
            "client": self.client,
            "scheme": "https",
            "method": method,
            "root_path": self.state.root_path,
            "path": self.state.root_path
            + unquote(raw_path.decode("ascii", "surrogateescape"), errors="surrogateescape"),
            "raw_path": raw_path,
            "query_string": query,
            "headers": headers,
            "state": self.state.app_state.copy(),
        }
        if not stream.ended:
            self._arm_body_timer(stream)
        stream.task = self.state.start(self._run(stream, scope))

    def _data(self, event: h2.events.DataReceived) -> None:
        stream = self.streams.get(event.stream_id or 0)
        length = event.flow_controlled_length or 0
        if stream is None or stream.closed:
            if length and event.stream_id is not None:
                self._acknowledge(event.stream_id, length)
            return
        stream.body.append((bytes(event.data or b""), length))
        if not stream.ended:
            self._arm_body_timer(stream)
        stream.wakeup.set()

    def _acknowledge(self, stream_id: int, length: int) -> None:
        try:
            self.conn.acknowledge_received_data(length, stream_id)
        except h2.exceptions.StreamClosedError:
            self.conn.increment_flow_control_window(
                length
            )  # the stream is gone; the connection's window is not

    def _reset_by_client(self, stream_id: int | None) -> None:
        stream = self.streams.get(stream_id or 0)
        self.resets += 1
        if self.resets > MAX_RESETS:
            LOGGER.info(
                "refused an HTTP/2 connection: more than %d streams reset",
                MAX_RESETS,
                extra={"client": self._peer},
            )
            self.conn.close_connection(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            self._flush()
            self._linger()
            return
        if stream is not None:
            if stream.task is not None and not stream.response_done:
                stream.task.cancel()  # nobody wants the answer: stop forwarding it
            self._close_stream(stream)
            self._forget(stream)

    def _close_stream(self, stream: _Stream) -> None:
        stream.closed = True
        self._cancel_body_timer(stream)
        stream.wakeup.set()
        unread = sum(length for _, length in stream.body)
        stream.body.clear()
        if unread and self.transport is not None and not self.transport.is_closing():
            self._acknowledge(stream.id, unread)  # give the window back: the client may go on sending
            self._flush()

    def _forget(self, stream: _Stream) -> None:
        self.streams.pop(stream.id, None)
        if not self.streams:
            if self.closing:
                self._close()
            else:
                self._arm_idle(self.limits.keep_alive_timeout)

    def _refuse(self, stream: _Stream, status: int, why: str, *, log: bool = True) -> None:
        if log:
            LOGGER.info(
                "refused a request: %s (%d)", why, status, extra={"client": self._peer, "status": status}
            )
        body = refusal_body(status)
        headers = [
            (b":status", str(status).encode()),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]
        with contextlib.suppress(h2.exceptions.StreamClosedError):  # reset in the same read
            self.conn.send_headers(stream.id, headers)
            self.conn.send_data(stream.id, body, end_stream=True)
        self._close_stream(stream)
        self._flush()
        self._forget(stream)

    # -- one stream's ASGI app ------------------------------------------------------------------------

    async def _run(self, stream: _Stream, scope: dict[str, Any]) -> None:
        async def receive() -> dict[str, Any]:
            while True:
                if stream.body:
                    data, length = stream.body.pop(0)
                    if length and not stream.closed:
                        self._acknowledge(stream.id, length)  # the window opens as the app reads
                        self._flush()
                    more = bool(stream.body) or not stream.ended
                    stream.end_delivered = not more
                    return {"type": "http.request", "body": data, "more_body": more}
                if stream.closed:
                    return {"type": "http.disconnect"}
                if stream.ended and not stream.end_delivered:
                    stream.end_delivered = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                stream.wakeup.clear()
                await stream.wakeup.wait()

        async def send(message: dict[str, Any]) -> None:
            if stream.closed:
                return
            kind = message["type"]
            if kind == "http.response.start":
                stream.start = message
            elif kind == "http.response.body":
                try:
                    await self._respond(stream, message.get("body", b""), not message.get("more_body", False))
                except h2.exceptions.ProtocolError:  # e.g. the client closed the stream meanwhile
                    self._reset(stream, h2.errors.ErrorCodes.INTERNAL_ERROR)

        try:
            await self.app(scope, receive, send)
        except BaseException as error:
            if not isinstance(error, asyncio.CancelledError):
                log_app_error(error)
            if not stream.closed and not stream.response_done:
                if not stream.headers_sent:
                    self._refuse_after_error(stream)
                else:
                    self._reset(stream, h2.errors.ErrorCodes.INTERNAL_ERROR)
            if isinstance(error, asyncio.CancelledError):
                raise
        else:
            if not stream.closed and not stream.response_done:
                if stream.headers_sent:
                    self._reset(stream, h2.errors.ErrorCodes.INTERNAL_ERROR)
                else:
                    self._refuse_after_error(stream)
        finally:
            if stream.id in self.streams and stream.response_done:
                # What is left of the request body is read and thrown away (its window given back), not
                # refused with RST_STREAM: some clients treat that as a failure of the whole request.
                self._close_stream(stream)
                self._forget(stream)

    def _refuse_after_error(self, stream: _Stream) -> None:
        body = b"Internal Server Error"
        if stream.closed:
            return
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self.conn.send_headers(
                stream.id,
                [
                    (b":status", b"500"),
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", b"21"),
                ],
            )
            self.conn.send_data(stream.id, body, end_stream=True)
        stream.response_done = True
        self._flush()

    def _reset(self, stream: _Stream, code: h2.errors.ErrorCodes) -> None:
        if not stream.closed and self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self.conn.reset_stream(stream.id, code)
            self._flush()
        self._close_stream(stream)
        self._forget(stream)

    async def _respond(self, stream: _Stream, data: bytes, end: bool) -> None:
        if not stream.headers_sent:
            start = stream.start or {"status": 500, "headers": []}
            headers = [(b":status", str(start["status"]).encode())]
            for name, value in start.get("headers", ()):
                lowered = bytes(name).lower()
                if lowered not in _CONNECTION_SPECIFIC:
                    headers.append((lowered, bytes(value)))
            present = {name for name, _ in headers}
            headers += [(n, v) for n, v in self.state.default_headers if n not in present]
            self.conn.send_headers(stream.id, headers, end_stream=end and not data)
            stream.headers_sent = True
            if end and not data:
                stream.response_done = True
                self._flush()
                return
        # Frames are queued and written together (one TLS record per write: a write per frame would
        # encrypt and send the head and the body apart).
        view = memoryview(data)
        while view:
            if stream.closed:
                return
            window = min(self.conn.local_flow_control_window(stream.id), self.conn.max_outbound_frame_size)
            if window <= 0 or self.write_paused:
                self._flush()
                await self._wait_writable(stream)
                continue
            chunk, view = view[:window], view[window:]
            self.conn.send_data(stream.id, bytes(chunk), end_stream=end and not view)
        if end:
            if not data:
                self.conn.end_stream(stream.id)
            stream.response_done = True
        self._flush()

    async def _wait_writable(self, stream: _Stream) -> None:
        """Wait for the client's flow-control window (or the socket) to open; ``send_timeout`` bounds it."""
        stream.wakeup.clear()
        waiters = [asyncio.ensure_future(stream.wakeup.wait())]
        if self.write_paused:
            waiters.append(asyncio.ensure_future(self.writable.wait()))
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=self.limits.send_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
        if not done and not stream.closed:
            LOGGER.info("dropped a stream: client stopped reading the response", extra={"client": self._peer})
            self._reset(stream, h2.errors.ErrorCodes.CANCEL)

    # -- timers and closing ------------------------------------------------------------------------

    def _arm_idle(self, seconds: float) -> None:
        self._cancel_idle()
        self.idle_timer = self.loop.call_later(seconds, self._idle_over)

    def _cancel_idle(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def _idle_over(self) -> None:
        self.idle_timer = None
        if not self.streams and not self.closing:
            self.conn.close_connection()
            self._flush()
            self._close()

    def _arm_body_timer(self, stream: _Stream) -> None:
        self._cancel_body_timer(stream)
        stream.body_timer = self.loop.call_later(self.limits.body_timeout, self._body_stalled, stream)

    def _cancel_body_timer(self, stream: _Stream) -> None:
        if stream.body_timer is not None:
            stream.body_timer.cancel()
            stream.body_timer = None

    def _body_stalled(self, stream: _Stream) -> None:
        stream.body_timer = None
        if stream.ended or stream.closed:
            return
        if stream.body:  # the app has not read what came: the client is not the slow one
            self._arm_body_timer(stream)
            return
        if stream.headers_sent:
            LOGGER.info("dropped a stream: request body stalled", extra={"client": self._peer})
            self._reset(stream, h2.errors.ErrorCodes.CANCEL)
        else:
            self._refuse(stream, 408, "request body stalled")

    def _send_stalled(self) -> None:
        self.send_timer = None
        if self.write_paused:
            LOGGER.info(
                "dropped a connection: client stopped reading the response", extra={"client": self._peer}
            )
            if self.transport is not None:
                self.transport.abort()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _linger(self) -> None:
        """Close soon, reading meanwhile: closing with unread input makes the kernel reset the connection,
        which can destroy the GOAWAY before the client reads it."""
        self.closing = True
        for stream in list(self.streams.values()):
            if stream.task is not None:
                stream.task.cancel()
            self._close_stream(stream)
        self.lingering = self.loop.call_later(_LINGER, self._close)

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class AlpnProtocol(asyncio.Protocol):
    """The protocol of a TLS connection to ``serve``: HTTP/2 when ALPN chose ``h2``, else HTTP/1.1.

    The server's TLS context offers ``h2`` then ``http/1.1``
    (:func:`~consumer_auth._limits.server_tls_context`); asyncio calls :meth:`connection_made` once the
    handshake is over, when the choice is known.
    """

    def __init__(self, state: ServerState, loop: asyncio.AbstractEventLoop) -> None:
        self._state = state
        self._loop = loop

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        chosen = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        protocol: asyncio.Protocol
        if chosen == "h2":
            protocol = H2Protocol(self._state, self._loop)
        else:
            protocol = HttpProtocol(self._state, self._loop, tls=True)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
