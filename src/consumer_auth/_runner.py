"""Running the server front: the event loop, the listening sockets, the ASGI lifespan and the graceful
shutdown of ``consumer-auth serve``, ``demo`` and ``admin``.

:func:`run` serves an ASGI app on sockets bound beforehand (``serve --workers N`` shares one among its
workers, see :mod:`consumer_auth._supervisor`) on uvloop when it is installed. SIGTERM or SIGINT stop
it gracefully: the sockets stop accepting, idle kept-alive connections close, requests in flight get
up to ``graceful_timeout`` seconds to finish (HTTP/2 connections are sent ``GOAWAY``, websockets a close
with 1001), then what is left is cut off and the app's lifespan shutdown runs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import socket
import ssl
from collections.abc import Callable, MutableMapping
from typing import Any

from ._limits import ServerLimits, server_tls_context
from ._server import LOGGER, ASGIApp, HttpProtocol, ServerState, log_app_error
from .sansio._trust import TrustedProxies

__all__ = ["Server", "TrustForwarded", "address_text", "bind", "new_event_loop", "run"]

_POLL = 0.05  # seconds between checks for in-flight work during a graceful shutdown
_BACKLOG = 2048


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's when it is installed (the ``server`` extra installs it), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def bind(host: str, port: int) -> socket.socket | str:
    """A socket bound to ``host:port`` (``SO_REUSEADDR``), or why it cannot be (the error line's text)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        return f"cannot listen on {host}:{port} ({error.strerror or error}); try --port"
    return sock


def address_text(sock: socket.socket, scheme: str) -> str:
    """``http://127.0.0.1:9080`` for a listening socket."""
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}"


class _Lifespan:
    """The app's ASGI lifespan: startup before the first connection, shutdown after the last."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.startup_done = asyncio.Event()
        self.shutdown_done = asyncio.Event()
        self.failed: str | None = None
        self.task: asyncio.Task[None] | None = None

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self.inbox.get, self._send)
        except BaseException as error:
            if not isinstance(error, asyncio.CancelledError):
                log_app_error(error)
                self.failed = self.failed or "the application's lifespan raised an exception"
            if isinstance(error, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
        finally:
            self.startup_done.set()
            self.shutdown_done.set()

    async def _send(self, message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.startup_done.set()
        elif kind == "lifespan.startup.failed":
            self.failed = str(message.get("message") or "the application's startup failed")
            self.startup_done.set()
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            self.shutdown_done.set()

    async def startup(self) -> bool:
        self.task = asyncio.ensure_future(self._main())
        await self.inbox.put({"type": "lifespan.startup"})
        await self.startup_done.wait()
        if self.failed is not None:
            LOGGER.error("Application startup failed: %s", self.failed)
            return False
        return True

    async def shutdown(self) -> None:
        if self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.shutdown_done.wait()


class Server:
    """One process's server front for an ASGI app: HTTP/1.1 (and HTTP/2 over TLS) with ``limits``.

    Args:
        app: The ASGI application (its lifespan is run).
        limits: The ``server:`` limits; with a certificate, the sockets speak TLS only.
        access_log: Log one line per request (the proxy writes its own; ``admin`` uses this).
        graceful_timeout: Seconds requests in flight may take to finish after SIGTERM or SIGINT.
        announce: Log the addresses served (off in ``--workers`` worker processes: their parent does).
        quiet: Log nothing of starting and stopping (the demo's stand-in upstream).
    """

    def __init__(
        self,
        app: ASGIApp,
        limits: ServerLimits,
        *,
        access_log: bool = False,
        graceful_timeout: float = 30.0,
        announce: bool = True,
        quiet: bool = False,
    ) -> None:
        self.state = ServerState(app, limits, access_log=access_log)
        self._log = (lambda *args: None) if quiet else LOGGER.info
        self.limits = limits
        self.graceful_timeout = graceful_timeout
        self.announce = announce
        self.started = False
        self._stopping: asyncio.Event | None = None

    def stop(self) -> None:
        """Begin the graceful shutdown (call from the server's loop, e.g. a signal handler)."""
        if self._stopping is not None:
            self._stopping.set()

    def _factory(self, loop: asyncio.AbstractEventLoop) -> Callable[[], asyncio.Protocol]:
        state = self.state
        if self.limits.tls:
            from ._h2 import AlpnProtocol  # TLS: HTTP/2 when the client chooses it, else HTTP/1.1

            return lambda: AlpnProtocol(state, loop)
        return lambda: HttpProtocol(state, loop)

    def _tls(self) -> ssl.SSLContext | None:
        limits = self.limits
        if limits.ssl_certfile is None or limits.ssl_keyfile is None:
            return None
        return server_tls_context(limits.ssl_certfile, limits.ssl_keyfile, ("h2", "http/1.1"))

    async def serve(self, sockets: list[socket.socket], *, signals: bool = True) -> bool:
        """Serve on ``sockets`` (bound, listening or not) until :meth:`stop` or SIGTERM/SIGINT; whether it
        started (a failed lifespan startup is logged and returns ``False``)."""
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._log("Started server process [%d]", os.getpid())
        if signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stop)
        lifespan = _Lifespan(self.state.app, self.state.app_state)
        try:
            if not await lifespan.startup():
                return False
            self._log("Application startup complete.")
            context = self._tls()
            factory = self._factory(loop)
            servers = []
            for sock in sockets:
                sock.setblocking(False)
                servers.append(await loop.create_server(factory, sock=sock, ssl=context, backlog=_BACKLOG))
                if self.announce:
                    scheme = "https" if context is not None else "http"
                    LOGGER.info(
                        "consumer-auth running on %s (Press CTRL+C to quit)", address_text(sock, scheme)
                    )
            self.started = True
            await self._stopping.wait()
            self._log("Shutting down")
            for server in servers:
                server.close()
            await self._drain()
            self._log("Waiting for application shutdown.")
            await lifespan.shutdown()
            self._log("Application shutdown complete.")
            self._log("Finished server process [%d]", os.getpid())
            return True
        finally:
            if signals:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)

    async def _drain(self) -> None:
        """Close idle connections, let requests in flight finish (up to ``graceful_timeout``), then cut."""
        state = self.state
        state.shutting_down = True
        for connection in list(state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.graceful_timeout
        while (state.connections or state.tasks) and loop.time() < deadline:
            for connection in list(state.connections):
                connection.shutdown()  # a connection whose response just finished closes now
            await asyncio.sleep(_POLL)
        if state.tasks:
            LOGGER.warning("Cancel %d running task(s), timeout graceful shutdown exceeded", len(state.tasks))
            for task in list(state.tasks):
                task.cancel()
            await asyncio.gather(*state.tasks, return_exceptions=True)
        for connection in list(state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()


def run(
    app: ASGIApp,
    sockets: list[socket.socket],
    limits: ServerLimits,
    *,
    access_log: bool = False,
    graceful_timeout: float = 30.0,
    announce: bool = True,
    before: Callable[[], Any] | None = None,
    after: Callable[[], Any] | None = None,
) -> bool:
    """Serve ``app`` on ``sockets`` on a new event loop until SIGTERM or SIGINT; whether it started.

    ``before`` and ``after`` are coroutine functions run on the same loop before serving and after the
    shutdown (``demo`` starts and stops its stand-in upstream with them).
    """
    server = Server(app, limits, access_log=access_log, graceful_timeout=graceful_timeout, announce=announce)

    async def main() -> bool:
        if before is not None:
            await before()
        try:
            return await server.serve(sockets)
        finally:
            if after is not None:
                await after()

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main())


class TrustForwarded:
    """ASGI middleware: behind trusted proxies, the client address from ``X-Forwarded-For`` and the
    scheme from ``X-Forwarded-Proto``; from any other peer, both as the connection has them.

    Args:
        app: The ASGI application.
        trusted: The proxies to believe (addresses or networks); none: the middleware changes nothing.
    """

    def __init__(self, app: ASGIApp, trusted: TrustedProxies) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        client = scope.get("client")
        if self.trusted and scope["type"] in ("http", "websocket") and client:
            try:
                peer = ipaddress.ip_address(client[0])
            except ValueError:
                peer = None
            if peer is not None and self.trusted.trusts(peer):
                headers = scope["headers"]
                forwarded = tuple(v.decode("latin-1") for n, v in headers if n == b"x-forwarded-for")
                proto = [v.decode("latin-1") for n, v in headers if n == b"x-forwarded-proto"]
                # In place, as the server's access log reads the scope it made.
                found = self.trusted.client(client[0], forwarded)
                if found is not None and found != client[0]:
                    scope["client"] = (found, 0)
                if proto:
                    scheme = proto[-1].split(",")[-1].strip().lower()
                    if scheme in ("http", "https", "ws", "wss"):
                        if scope["type"] == "websocket":
                            scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
                        scope["scheme"] = scheme
        await self.app(scope, receive, send)
