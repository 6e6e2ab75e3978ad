"""A small pool of keep-alive ``http.client`` connections per upstream node, for the WSGI forwarder.

Why not urllib3: the forwarder needs the request target sent byte for byte (``%2F`` stays ``%2F``), a
send timeout apart from the read timeout (the socket timeout is switched between the two phases), and
to know whether a failed connection was a reused one (then, and only for a request without a body, it
is safe to try once more on a fresh connection). ``http.client`` gives all three directly.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import suppress

from consumer_auth.upstream import Upstream, UpstreamNode

from ._common import tls_for

__all__ = ["ConnectionPool", "NodePool"]

IDLE_SECONDS = 15.0
"""An idle connection older than this is closed rather than reused (upstreams time idle ones out too)."""

MAX_IDLE = 64
"""Idle connections kept per node; more are closed when they come back."""


def _alive(sock: socket.socket | None) -> bool:
    """Whether an idle keep-alive connection is still usable: not closed by the peer, nothing unread."""
    if sock is None:
        return False
    timeout = sock.gettimeout()
    try:
        sock.setblocking(False)
        if isinstance(sock, ssl.SSLSocket):
            return _tls_alive(sock)
        return not sock.recv(1, socket.MSG_PEEK)  # b"" = closed, anything else = unexpected bytes
    except BlockingIOError:
        return True  # nothing to read: alive and quiet
    except OSError:
        return False
    finally:
        with suppress(OSError):
            sock.settimeout(timeout)


def _tls_alive(sock: ssl.SSLSocket) -> bool:
    """:func:`_alive` for a TLS socket (non-blocking), which cannot peek: the raw bytes waiting are
    peeked, and when there are some, read through TLS: a record without data (a session ticket) leaves
    the connection usable, a close or unexpected data does not."""
    if sock.pending():
        return False
    if not socket.socket.recv(sock, 1, socket.MSG_PEEK):  # raises BlockingIOError when nothing waits
        return False
    try:
        sock.recv(1)
    except ssl.SSLWantReadError:
        return True
    return False


class TLSConnection(http.client.HTTPConnection):
    """An HTTPS connection whose TLS server name (SNI, and the name checked) is given apart from the
    address connected to: ``http.client.HTTPSConnection`` always uses the address."""

    default_port = http.client.HTTPS_PORT

    def __init__(
        self, host: str, port: int, *, timeout: float, context: ssl.SSLContext, server_name: str
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self._context = context
        self._server_name = server_name

    def connect(self) -> None:
        super().connect()
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_name)


class NodePool:
    """Idle connections to one node (most recently used first). Thread-safe."""

    __slots__ = ("_connect_host", "_idle", "_lock", "_server_name", "_ssl", "node", "scheme")

    def __init__(
        self,
        scheme: str,
        node: UpstreamNode,
        server_name: str | None = None,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.scheme = scheme
        self.node = node
        self._connect_host = node.host.strip("[]")
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []
        self._lock = threading.Lock()
        self._ssl = context
        self._server_name = server_name or self._connect_host

    def new(self, connect_timeout: float) -> http.client.HTTPConnection:
        """A fresh, connected connection. Raises ``OSError`` (``TimeoutError`` on timeout) if not possible."""
        connection: http.client.HTTPConnection
        if self._ssl is not None:
            connection = TLSConnection(
                self._connect_host,
                self.node.port,
                timeout=connect_timeout,
                context=self._ssl,
                server_name=self._server_name,
            )
        else:
            connection = http.client.HTTPConnection(
                self._connect_host, self.node.port, timeout=connect_timeout
            )
        try:
            connection.connect()
        except BaseException:
            connection.close()
            raise
        return connection

    def idle(self) -> Iterator[http.client.HTTPConnection]:
        """Idle connections that still look usable, most recent first (stale ones are closed on the way)."""
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    return
                connection, since = self._idle.pop()
            if now - since < IDLE_SECONDS and _alive(connection.sock):
                yield connection
                return
            connection.close()

    def put(self, connection: http.client.HTTPConnection) -> None:
        """Give back a connection whose response was read to the end."""
        with self._lock:
            if len(self._idle) < MAX_IDLE:
                self._idle.append((connection, time.monotonic()))
                return
        connection.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection, _ in idle:
            connection.close()


class ConnectionPool:
    """A :class:`NodePool` per (scheme, node, TLS server name and settings); made on first use."""

    __slots__ = ("_lock", "_pools")

    def __init__(self) -> None:
        self._pools: dict[tuple[str, str, int, str | None, ssl.SSLContext | None], NodePool] = {}
        self._lock = threading.Lock()

    def for_node(self, upstream: Upstream, node: UpstreamNode) -> NodePool:
        """The pool of one node of an upstream."""
        server_name, context = tls_for(upstream, node)
        key = (upstream.scheme, node.host, node.port, server_name, context)
        pool = self._pools.get(key)
        if pool is None:
            with self._lock:
                pool = self._pools.setdefault(key, NodePool(upstream.scheme, node, server_name, context))
        return pool

    def close(self) -> None:
        """Close every idle connection of every node."""
        with self._lock:
            pools = list(self._pools.values())
        for pool in pools:
            pool.close()
