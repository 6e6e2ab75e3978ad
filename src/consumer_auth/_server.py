"""The HTTP/1.1 front of ``consumer-auth serve``: uvicorn's httptools protocol, with limits it lacks.

uvicorn bounds neither the number nor the size of request headers when it parses with httptools, and
a connection that sends nothing, half a request head or half a body stays open for ever. This protocol
adds (see :class:`~consumer_auth._limits.ServerLimits`):

- size limits on the request target (414), the request head and the number of headers (431), checked
  as bytes arrive, so a huge head is refused before it is buffered whole;
- a head timeout from the connection's opening (or the first byte of a further request) to the end of
  the head (408), a body stall timeout (408), and a send stall timeout for clients that stop reading;
- a first-byte timeout, shorter than the head timeout: a new connection that sends nothing is closed
  without an answer;
- a cap on the connections one client address holds at once (IPv6 by /64, as brute-force limits
  count): a further connection is answered 503 and closed, so that one client cannot take the whole
  ``max_connections``;
- framing rules against request smuggling: a ``Transfer-Encoding`` other than a single ``chunked`` is
  501; ``Transfer-Encoding`` together with ``Content-Length``, more than one ``Host``, and a
  ``Connection`` header naming ``Content-Length``, ``Transfer-Encoding`` or ``Host`` are 400 (httptools
  refuses repeated or conflicting ``Content-Length`` itself).

Every refusal answers ``{"error_msg": "<status> <phrase>"}`` and a newline, then closes the connection
gracefully: it stops writing, reads and discards what the client still sends for up to ``_LINGER``
seconds, then closes (closing at once with unread input makes the kernel reset the connection, which can
destroy the answer before the client reads it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import weakref
from http import HTTPStatus
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ._limits import ServerLimits, server_tls_context
from .proxy._plan import connection_tokens, names_framing
from .sansio.plugins.brute_force import client_subject

__all__ = ["LOGGER", "GuardedProtocol", "refusal_body", "tls_context", "uvicorn_options"]

LOGGER = logging.getLogger("consumer_auth.server")
"""Refused requests and dropped connections (INFO): the reason and the client address, nothing else."""


_LINGER = 2.0


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


_ANSWERS = {status: _answer(status) for status in (400, 408, 413, 414, 431, 501, 503)}

# Open connections by client subject, per server (a process may run more than one, in tests).
_OPEN: weakref.WeakKeyDictionary[object, dict[str, int]] = weakref.WeakKeyDictionary()
# Clients whose refusal was logged since they reached their cap (one log line per episode, not per connection).
_CAPPED: weakref.WeakKeyDictionary[object, set[str]] = weakref.WeakKeyDictionary()


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with size limits, timeouts and strict framing (one per connection).

    ``limits`` is the process's :class:`ServerLimits` (set by :func:`uvicorn_options`).
    """

    limits: ClassVar[ServerLimits] = ServerLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
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
        self._subject: str | None = None  # counted against the per-client cap while set

    # -- connection ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.client is not None and not self._admit(client_subject(str(self.client[0]))):
            return
        self._arm_head_timer()
        self._first_byte_timer = self.loop.call_later(self.limits.first_byte, self._first_byte_timed_out)

    def _admit(self, subject: str) -> bool:
        """Count this connection against its client's cap; over the cap, answer 503 and close."""
        counts = _OPEN.setdefault(self.server_state, {})
        held = counts.get(subject, 0)
        if held >= self.limits.per_client:
            logged = _CAPPED.setdefault(self.server_state, set())
            if subject not in logged:  # once while the client stays at its cap, not once per connection
                logged.add(subject)
                LOGGER.info(
                    "refused connections: %d open from this client already (503 until one closes)",
                    held,
                    extra={"client": self.client[0] if self.client else None, "status": 503},
                )
            self._refused = True
            self.transport.write(_ANSWERS[503])
            self.transport.close()
            return False
        counts[subject] = held + 1
        self._subject = subject
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        timers = (
            self._head_timer,
            self._body_timer,
            self._send_timer,
            self._linger_timer,
            self._first_byte_timer,
        )
        for timer in timers:
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._send_timer = self._linger_timer = None
        self._first_byte_timer = None
        subject, self._subject = self._subject, None
        if subject is not None:
            counts = _OPEN.get(self.server_state)
            if counts is not None:
                left = counts.get(subject, 1) - 1
                if left > 0:
                    counts[subject] = left
                else:
                    counts.pop(subject, None)
                if left < self.limits.per_client:
                    _CAPPED.get(self.server_state, set()).discard(subject)
        super().connection_lost(exc)

    def eof_received(self) -> None:
        if self._refused and not self.transport.is_closing():
            self.transport.close()  # the client has finished sending: the lingering close is over

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._refused:
            return
        if self._first_byte_timer is not None:
            self._first_byte_timer.cancel()
            self._first_byte_timer = None
        if self._in_head:
            self._arm_head_timer()
            self._head_bytes += len(data)
        elif self._in_body:
            self._arm_body_timer()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            refusal = self._refusal or (400, "invalid HTTP request")
            self._refuse(*refusal)
            return
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(431, f"request head over {self.limits.max_header_bytes} bytes")

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._send_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    # -- parser callbacks --------------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
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
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        encodings: list[bytes] = []
        length = False
        hosts = 0
        listed: set[bytes] = set()
        for name, value in self.headers:
            if name == b"host":
                hosts += 1
            elif name == b"transfer-encoding":
                encodings.append(value)
            elif name == b"content-length":
                length = True
            elif name == b"connection":
                listed |= connection_tokens(value)
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
        super().on_headers_complete()
        if self._in_body:
            self._arm_body_timer()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._cancel(self._body_timer)
        self._body_timer = None
        super().on_message_complete()
        # The next bytes on this connection start a new request head.
        self._in_head = True
        self._head_bytes = self._head_size = self._headers_seen = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn's keep-alive timer now watches the idle connection; the head timer starts again with
        # the first byte of the next request (data_received).

    # -- refusals and timers -----------------------------------------------------------------------

    def _stop(self, status: int, why: str) -> None:
        self._refusal = (status, why)
        raise _Refused(why)

    def _refuse(self, status: int, why: str) -> None:
        if self._refused:
            return
        self._refused = True
        client = self.client[0] if self.client else None
        LOGGER.info("refused a request: %s (%d)", why, status, extra={"client": client, "status": status})
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's further sends and receives end here
            cycle.message_event.set()
            if cycle.response_started:
                self.transport.abort()
                return
        if self.transport.is_closing():
            return
        self.transport.write(_ANSWERS[status])
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.flow.resume_reading()
            self._linger_timer = self.loop.call_later(
                min(_LINGER, self.limits.header_timeout), self._linger_over
            )
        else:
            self.transport.close()

    def _linger_over(self) -> None:
        self._linger_timer = None
        if not self.transport.is_closing():
            self.transport.abort()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            if self._head_bytes == 0 and (self.cycle is None or self.cycle.response_complete):
                self._drop("no request within the header timeout")
            else:
                self._refuse(408, "request head not complete within the header timeout")

    def _first_byte_timed_out(self) -> None:
        self._first_byte_timer = None
        if self._head_bytes == 0 and self.cycle is None and not self.transport.is_closing():
            self._drop("no byte within the first-byte timeout")

    def _arm_body_timer(self) -> None:
        self._cancel(self._body_timer)
        self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timed_out)

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if not self._in_body or self.transport.is_closing():
            return
        if self.flow.read_paused:  # we stopped reading (the app is slow), not the client
            self._arm_body_timer()
            return
        self._refuse(408, "request body stalled")

    def _send_stalled(self) -> None:
        self._send_timer = None
        # Also when closing: a closing transport waits for its buffer to drain, which never happens.
        if self.flow.write_paused:
            self._drop("client stopped reading the response")

    def _drop(self, why: str) -> None:
        client = self.client[0] if self.client else None
        LOGGER.info("dropped a connection: %s", why, extra={"client": client})
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self._refused = True
        self.transport.abort()

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()


def uvicorn_options(limits: ServerLimits) -> dict[str, Any]:
    """The uvicorn options that enforce ``limits``; merge them into the server's other options.

    The limits are set on :class:`GuardedProtocol` for the whole process (one server per process), so
    call this in every process that serves: ``serve --workers N`` calls it again in each worker, which
    uvicorn starts with the protocol class but not its settings.
    """
    GuardedProtocol.limits = limits
    options: dict[str, Any] = {
        "http": GuardedProtocol,
        "limit_concurrency": limits.max_connections,
        "timeout_keep_alive": limits.keep_alive_timeout,
    }
    if limits.ssl_certfile is not None:
        from ._h2 import AlpnProtocol  # TLS: HTTP/2 when the client chooses it, else this protocol

        options.update(
            http=AlpnProtocol,
            ssl_certfile=limits.ssl_certfile,
            ssl_keyfile=limits.ssl_keyfile,
            ssl_context_factory=tls_context,
        )
    return options


def tls_context(config: Any, default: Any) -> ssl.SSLContext:
    """uvicorn's ``ssl_context_factory``: :func:`server_tls_context` for the config's files, offering
    ``h2`` then ``http/1.1``."""
    return server_tls_context(str(config.ssl_certfile), str(config.ssl_keyfile), ("h2", "http/1.1"))
