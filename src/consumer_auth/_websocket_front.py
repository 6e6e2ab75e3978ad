"""Websocket connections of ``consumer-auth serve``'s HTTP/1.1 front, on the ``websockets`` library's
sans-IO :class:`~websockets.server.ServerProtocol`. This module is long because the handshake's three
answers, the message flow both ways and the closing handshake are one connection's state machine.

The HTTP/1.1 front (:mod:`consumer_auth._server`) hands a connection over once httptools has parsed a
websocket handshake. The app then sees an ASGI ``websocket`` scope with the ``websocket.http.response``
extension, so it decides the handshake as it decides a request: ``websocket.accept`` answers 101,
``websocket.http.response.*`` any other answer (the gateway's 401 bytes), ``websocket.close`` before
accepting 403. After the handshake, frames are the library's (framing, masking, fragments, the closing
handshake, answers to pings); this module turns messages into ASGI events and back.

Limits: a message from the client is at most :data:`MAX_MESSAGE` bytes (larger closes with 1009); the
client is pinged every :data:`PING_INTERVAL` seconds and closed (1011) if it does not answer within as
long; a client that stops reading is dropped after the ``send_timeout`` of the server limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, MutableMapping
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import CLOSED, CONNECTING, OPEN
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

__all__ = ["MAX_MESSAGE", "PING_INTERVAL", "WebSocketSession"]

MAX_MESSAGE = 16 * 1024 * 1024
"""The largest message a client may send (the limit of the proxy's own upstream side)."""

PING_INTERVAL = 20.0
"""Seconds between pings to the client, and how long it has to answer one."""

_LOGGER = logging.getLogger("consumer_auth.server")
_LIBRARY_LOGGER = logging.getLogger("consumer_auth.server.websocket")
_LIBRARY_LOGGER.setLevel(logging.WARNING)  # the library logs every open and close at INFO
_ASGI = {"version": "3.0", "spec_version": "2.4"}
_CLOSE_WAIT = 10.0
_HIGH_WATER = 4  # client messages queued for the app before the session stops reading


class WebSocketSession(asyncio.Protocol):
    """One websocket connection: the handshake decided by the ASGI app, then messages both ways."""

    def __init__(
        self,
        state: Any,  # consumer_auth._server.ServerState (not imported: that module imports this one)
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        *,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
        secure: bool,
        on_close: Callable[[], None],
    ) -> None:
        self.state = state
        self.transport = transport
        self.loop = loop
        self.on_close = on_close
        self.ws = ServerProtocol(
            # A plain function: the library binds it to the protocol (the app's choice, from accept).
            max_size=MAX_MESSAGE,
            select_subprotocol=lambda protocol, offered: self.chosen,
            logger=_LIBRARY_LOGGER,
        )
        self.chosen: Subprotocol | None = None
        self.request: Request | None = None
        self.incoming: deque[dict[str, Any]] = deque()
        self.ready = asyncio.Event()
        self.pending = b""  # bytes after the handshake, read once it is accepted
        self.fragments: list[bytes] = []
        self.fragment_text = False
        self.accepted = False
        self.answered = False  # a handshake answer (101 or another) went out
        self.refusal: dict[str, Any] | None = None  # websocket.http.response.start, body pending
        self.refusal_body: list[bytes] = []
        self.closed = False
        self.close_code = 1006
        self.read_paused = False
        self.write_paused = False
        self.writable = asyncio.Event()
        self.writable.set()
        self.send_timer: asyncio.TimerHandle | None = None
        self.ping_timer: asyncio.TimerHandle | None = None
        self.close_timer: asyncio.TimerHandle | None = None
        self.awaiting_pong = False
        self.task: asyncio.Task[None] | None = None
        raw_path, _, query = target.partition(b"?")
        try:
            url = httptools.parse_url(target)
            raw_path, query = url.path or b"/", url.query or b""
        except httptools.HttpParserInvalidURLError:
            pass
        path = raw_path.decode("ascii", "surrogateescape")
        if "%" in path:
            path = unquote(path, errors="surrogateescape")
        offered = [
            token.strip()
            for name, value in headers
            if name == b"sec-websocket-protocol"
            for token in value.decode("latin-1").split(",")
            if token.strip()
        ]
        root = state.root_path
        self.scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": _ASGI,
            "http_version": "1.1",
            "scheme": "wss" if secure else "ws",
            "server": server,
            "client": client,
            "root_path": root,
            "path": root + path,
            "raw_path": root.encode("ascii") + raw_path if root else raw_path,
            "query_string": query,
            "headers": headers,
            "subprotocols": offered,
            "state": state.app_state.copy(),
            "extensions": {"websocket.http.response": {}},
        }
        head = [b"%s %s HTTP/1.1\r\n" % (method.encode("ascii"), target)]
        head += [b"%s: %s\r\n" % (name, value) for name, value in headers]
        head.append(b"\r\n")
        self.ws.receive_data(b"".join(head))
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self.request = event

    @property
    def _peer(self) -> str | None:
        client = self.scope["client"]
        return client[0] if client else None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, trailing: bytes) -> None:
        """Begin: run the app on the handshake; ``trailing`` are bytes that came after it."""
        self.pending = trailing
        self.state.connections.add(self)
        self.incoming.append({"type": "websocket.connect"})
        self.ready.set()
        self.task = self.state.start(self._run())

    async def _run(self) -> None:
        try:
            await self.state.app(self.scope, self.receive, self.send)
        except BaseException as error:
            if not isinstance(error, asyncio.CancelledError):
                _LOGGER.error("Exception in ASGI application", exc_info=error)
            if not self.answered:
                self._answer_plain(500)
            elif not self.closed:
                self._close(1011)
            if isinstance(error, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
        else:
            if not self.answered:
                self._answer_plain(403 if self.refusal is None else 500)
            elif not self.closed and self.accepted:
                self._close(1000)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pass  # the HTTP/1.1 front made the connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        for timer in (self.send_timer, self.ping_timer, self.close_timer):
            if timer is not None:
                timer.cancel()
        if not self.closed:
            self.closed = True
            self.incoming.append({"type": "websocket.disconnect", "code": self.close_code})
            self.ready.set()
        self.writable.set()
        self.on_close()

    def data_received(self, data: bytes) -> None:
        if not self.accepted:
            self.pending += data  # read once the handshake is accepted (dropped if it is not)
            return
        self.ws.receive_data(data)
        self._events()

    def eof_received(self) -> bool | None:
        if self.accepted:
            self.ws.receive_eof()
            self._events()
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        self.writable.clear()
        if self.send_timer is None:
            self.send_timer = self.loop.call_later(self.state.limits.send_timeout, self._send_stalled)

    def resume_writing(self) -> None:
        self.write_paused = False
        self.writable.set()
        if self.send_timer is not None:
            self.send_timer.cancel()
            self.send_timer = None

    def shutdown(self) -> None:
        """Graceful shutdown: close the websocket (1001, going away)."""
        if self.accepted and not self.closed:
            self._close(1001)
        elif not self.answered and not self.transport.is_closing():
            pass  # the handshake is being decided: its answer comes, then the connection closes

    # -- frames in ---------------------------------------------------------------------------------

    def _events(self) -> None:
        for event in self.ws.events_received():
            if not isinstance(event, Frame):
                continue
            if event.opcode in (Opcode.TEXT, Opcode.BINARY):
                self.fragments = [bytes(event.data)]
                self.fragment_text = event.opcode is Opcode.TEXT
                if event.fin:
                    self._deliver()
            elif event.opcode is Opcode.CONT:
                self.fragments.append(bytes(event.data))
                if event.fin:
                    self._deliver()
            elif event.opcode is Opcode.PONG:
                self.awaiting_pong = False
            elif event.opcode is Opcode.CLOSE:
                self._received_close()
        self._flush()
        if self.ws.close_expected() and self.close_timer is None:
            self.close_timer = self.loop.call_later(_CLOSE_WAIT, self.transport.abort)
        if self.ws.state is CLOSED and not self.closed:  # the stream ended, or a protocol error
            self._received_close()

    def _deliver(self) -> None:
        data = b"".join(self.fragments)
        self.fragments = []
        message: dict[str, Any]
        if self.fragment_text:
            message = {"type": "websocket.receive", "text": data.decode("utf-8"), "bytes": None}
        else:
            message = {"type": "websocket.receive", "bytes": data, "text": None}
        self.incoming.append(message)
        self.ready.set()
        if len(self.incoming) >= _HIGH_WATER and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _received_close(self) -> None:
        if self.closed:
            return
        self.closed = True
        received = self.ws.close_rcvd
        self.close_code = received.code if received is not None else 1006
        self.incoming.append(
            {
                "type": "websocket.disconnect",
                "code": self.close_code,
                "reason": received.reason if received is not None else "",
            }
        )
        self.ready.set()
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    # -- ASGI ------------------------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        while not self.incoming:
            self.ready.clear()
            await self.ready.wait()
        message = self.incoming.popleft()
        if self.read_paused and len(self.incoming) < _HIGH_WATER and not self.transport.is_closing():
            self.read_paused = False
            self.transport.resume_reading()
        if message["type"] == "websocket.disconnect":
            self.incoming.appendleft(message)  # every further receive says the same
        return message

    async def send(self, message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        if self.write_paused and not self.transport.is_closing():
            await self.writable.wait()
        if not self.answered and self.refusal is None:
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self._answer_plain(403)
            elif kind == "websocket.http.response.start":
                self.refusal = dict(message)
            else:
                raise RuntimeError(f"expected websocket.accept or a refusal, got {kind!r}")
            return
        if self.refusal is not None and not self.answered:
            if kind != "websocket.http.response.body":
                raise RuntimeError(f"expected websocket.http.response.body, got {kind!r}")
            self.refusal_body.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                self._answer_refusal()
            return
        if self.closed or not self.accepted:
            return  # the client has gone; what the app still sends goes nowhere
        try:
            if kind == "websocket.send":
                text = message.get("text")
                if text is not None:
                    self.ws.send_text(text.encode("utf-8"))
                else:
                    self.ws.send_binary(bytes(message.get("bytes") or b""))
            elif kind == "websocket.close":
                self._close(int(message.get("code") or 1000), str(message.get("reason") or ""))
                return
            else:
                raise RuntimeError(f"expected websocket.send or websocket.close, got {kind!r}")
        except InvalidState:
            return
        self._flush()

    # -- answers -----------------------------------------------------------------------------------

    def _accept(self, message: MutableMapping[str, Any]) -> None:
        if self.request is None:
            self._answer_plain(400)
            return
        self.chosen = message.get("subprotocol")
        response = self.ws.accept(self.request)
        if response.status_code == 101:
            for name, value in message.get("headers") or ():
                response.headers[bytes(name).decode("latin-1")] = bytes(value).decode("latin-1")
        self.ws.send_response(response)
        self.answered = True
        self._flush()
        if response.status_code != 101 or self.ws.state is not OPEN:
            self.closed = True
            self.transport.close()
            return
        self.accepted = True
        self.ping_timer = self.loop.call_later(PING_INTERVAL, self._ping)
        if self.pending:
            pending, self.pending = self.pending, b""
            self.ws.receive_data(pending)
            self._events()

    def _answer_refusal(self) -> None:
        start = self.refusal or {}
        status = int(start.get("status", 500))
        body = b"".join(self.refusal_body)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, _phrase(status))]
        names = set()
        for name, value in (*self.state.default_headers, *start.get("headers", ())):
            lowered = bytes(name).lower()
            names.add(lowered)
            head.append(b"%s: %s\r\n" % (lowered, bytes(value)))
        if b"content-length" not in names:
            head.append(b"content-length: %d\r\n" % len(body))
        if b"connection" not in names:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        self._answer(b"".join(head) + body)

    def _answer_plain(self, status: int) -> None:
        body = b"%d %s\n" % (status, _phrase(status))
        self._answer(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, _phrase(status), len(body), body)
        )

    def _answer(self, data: bytes) -> None:
        self.answered = True
        self.closed = True
        if not self.transport.is_closing():
            self.transport.write(data)
            self.transport.close()

    def _close(self, code: int, reason: str = "") -> None:
        if self.ws.state in (OPEN, CONNECTING):
            with contextlib.suppress(InvalidState):
                self.ws.send_close(code, reason)
        self._flush()
        if not self.closed:
            self.closed = True
            self.close_code = code
            self.incoming.append({"type": "websocket.disconnect", "code": code})
            self.ready.set()
        if self.close_timer is None and not self.transport.is_closing():
            self.close_timer = self.loop.call_later(_CLOSE_WAIT, self.transport.abort)

    def _flush(self) -> None:
        for data in self.ws.data_to_send():
            if self.transport.is_closing():
                return
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()
            else:
                self.transport.close()

    # -- timers ------------------------------------------------------------------------------------

    def _ping(self) -> None:
        self.ping_timer = None
        if self.closed or self.transport.is_closing():
            return
        if self.awaiting_pong:
            _LOGGER.info("dropped a websocket: no answer to a ping", extra={"client": self._peer})
            self._close(1011, "keepalive ping timeout")
            return
        self.awaiting_pong = True
        try:
            self.ws.send_ping(b"")
        except InvalidState:
            return
        self._flush()
        self.ping_timer = self.loop.call_later(PING_INTERVAL, self._ping)

    def _send_stalled(self) -> None:
        self.send_timer = None
        if self.write_paused:
            _LOGGER.info("dropped a websocket: client stopped reading", extra={"client": self._peer})
            self.transport.abort()


def _phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""
