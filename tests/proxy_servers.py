"""Real HTTP servers on loopback for the proxy tests: upstreams with chosen behaviours, and the proxies.

Every server binds 127.0.0.1 port 0 and runs in a daemon thread; :func:`stop_all` (called at the end of
the test session) stops whatever is still running.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import wsgiref.simple_server
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

import uvicorn
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from support import Headers, Reply, echo_document

_running: list[Callable[[], None]] = []


def stop_all() -> None:
    """Stop every server started by this module (all at once: each takes a polling interval to stop)."""
    threads = [threading.Thread(target=stop) for stop in _running]
    _running.clear()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# -- upstreams --------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    """One request to a test upstream; the server's ``behaviour`` decides the answer."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in separate writes
    server: UpstreamServer
    timeout = 30  # an idle keep-alive connection frees its thread after this

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    def _serve(self) -> None:
        self.server.count += 1
        self.server.behaviour(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _serve

    # helpers for behaviours

    def body_chunks(self, size: int = 65536) -> Iterator[bytes]:
        """The request body, as it arrives (Content-Length or chunked)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                length = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if length == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                remaining = length
                while remaining:
                    data = self.rfile.read(min(size, remaining))
                    if not data:
                        raise ConnectionError("request body cut short")
                    remaining -= len(data)
                    yield data
                self.rfile.readline()
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining:
            data = self.rfile.read(min(size, remaining))
            if not data:
                raise ConnectionError("request body cut short")
            remaining -= len(data)
            yield data

    def answer(
        self, status: int, body: bytes, headers: Headers = (), content_type: str = "application/json"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reset(self) -> None:
        """Abort the connection with a TCP reset."""
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True


Behaviour = Callable[[Handler], None]


def echo(handler: Handler) -> None:
    """Answer with the conformance table's document of what arrived (plus the raw target and body)."""
    body = b"".join(handler.body_chunks())
    raw, _, query = handler.path.partition("?")
    document = json.loads(
        echo_document(
            handler.command,
            unquote(raw),
            "",
            query,
            handler.headers.items(),
            None,
        )
    )
    document["consumer"] = handler.headers.get("X-Consumer-Username")
    document["target"] = handler.path
    document["body"] = body.decode("latin-1")
    document["server"] = handler.server.name
    handler.answer(200, json.dumps(document).encode())


class UpstreamServer(ThreadingHTTPServer):
    """A threaded HTTP/1.1 upstream on loopback."""

    daemon_threads = True

    def __init__(self, behaviour: Behaviour, name: str) -> None:
        self.behaviour = behaviour
        self.name = name
        self.count = 0
        self.connections: set[socket.socket] = set()
        super().__init__(("127.0.0.1", 0), Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Connections the proxy drops on purpose (aborted bodies, timeouts) are expected here.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def authority(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        for connection in list(self.connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def start_upstream(behaviour: Behaviour = echo, name: str = "upstream") -> UpstreamServer:
    server = UpstreamServer(behaviour, name)
    threading.Thread(target=server.serve_forever, args=(0.05,), name=f"upstream-{name}", daemon=True).start()
    _running.append(server.stop)
    return server


class TLSUpstreamServer(UpstreamServer):
    """An HTTPS upstream: the handshake happens in the handler's thread; ``server_names`` records the SNI
    of every handshake, ``client_subjects`` the common name of each client certificate presented."""

    def __init__(self, behaviour: Behaviour, name: str, context: ssl.SSLContext) -> None:
        super().__init__(behaviour, name)
        self.server_names: list[str | None] = []
        self.client_subjects: list[str] = []
        context.sni_callback = self._sni
        self.context = context

    def _sni(self, sock: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        self.server_names.append(name)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.do_handshake()
        peer = request.getpeercert()
        if peer:
            self.client_subjects.extend(
                value for part in peer["subject"] for key, value in part if key == "commonName"
            )
        super().finish_request(request, client_address)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


def start_tls_upstream(
    context: ssl.SSLContext, behaviour: Behaviour = echo, name: str = "tls"
) -> TLSUpstreamServer:
    server = TLSUpstreamServer(behaviour, name, context)
    threading.Thread(target=server.serve_forever, args=(0.05,), name=f"upstream-{name}", daemon=True).start()
    _running.append(server.stop)
    return server


def refused_port() -> int:
    """A loopback port nothing listens on (bound, then closed: connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def upload_sink(handler: Handler) -> None:
    """Read the whole body, answer its length and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    for chunk in handler.body_chunks():
        digest.update(chunk)
        size += len(chunk)
    handler.answer(200, json.dumps({"received": size, "sha256": digest.hexdigest()}).encode())


def pattern(size: int, chunk: int = 65536) -> Iterator[bytes]:
    """``size`` bytes of a repeating pattern, in chunks (the same bytes every time)."""
    block = bytes(range(256)) * (chunk // 256)
    while size > 0:
        piece = block[: min(chunk, size)]
        size -= len(piece)
        yield piece


def pattern_digest(size: int) -> str:
    digest = hashlib.sha256()
    for piece in pattern(size):
        digest.update(piece)
    return digest.hexdigest()


def download_source(handler: Handler) -> None:
    """Stream ``?size=N`` bytes of :func:`pattern` (chunked when ``&chunked=1``)."""
    for _ in handler.body_chunks():
        pass
    query = dict(part.split("=", 1) for part in handler.path.partition("?")[2].split("&") if "=" in part)
    size = int(query.get("size", "0"))
    chunked = query.get("chunked") == "1"
    handler.send_response(200)
    handler.send_header("Content-Type", "application/octet-stream")
    if chunked:
        handler.send_header("Transfer-Encoding", "chunked")
    else:
        handler.send_header("Content-Length", str(size))
    handler.end_headers()
    for piece in pattern(size):
        handler.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
    if chunked:
        handler.wfile.write(b"0\r\n\r\n")


# -- proxies ----------------------------------------------------------------------------------------


class ASGIServer:
    """An ASGI app on uvicorn (uvloop + httptools when installed, as ``consumer-auth serve``), in a thread.

    ``http="h11"`` serves with uvicorn's h11 protocol instead, which passes request targets on as
    hypercorn and daphne do (no leading ``/``, a ``#`` fragment, a lower-case method).
    """

    def __init__(
        self, app: Any, *, http: str = "auto", lifespan: Literal["auto", "on", "off"] = "on"
    ) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            app,
            lifespan=lifespan,
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            http=http,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        self._sock = sock
        # Wait until it answers (bounded: a server that never starts fails the test, it does not hang it).
        for _ in range(500):
            if self.server.started:
                break
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            threading.Event().wait(0.01)
        else:
            raise RuntimeError("uvicorn did not start within 5 s")
        _running.append(self.stop)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self._sock.close()


class QuietWSGIRequestHandler(WSGIRequestHandler):
    """werkzeug's handler without the line per request (errors are still logged)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class WSGIServer:
    """A WSGI app on werkzeug's threaded HTTP/1.1 server, in a thread."""

    def __init__(self, app: Any) -> None:
        self.server: BaseWSGIServer = make_server(
            "127.0.0.1", 0, app, threaded=True, request_handler=QuietWSGIRequestHandler
        )
        self.port = int(self.server.server_port)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        _running.append(self.stop)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        close = getattr(self.server.app, "close", None)
        if close is not None:
            close()  # the WSGI proxy's pooled upstream connections


def request(
    port: int,
    method: str,
    target: str,
    headers: Headers = (),
    body: bytes | None = None,
    timeout: float = 30,
) -> Reply:
    """Send one request, the target and headers exactly as given (``Host: localhost`` unless given)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        if not any(name.lower() == "host" for name, _ in headers):
            connection.putheader("Host", "localhost")
        for name, value in headers:
            connection.putheader(name, value.encode("latin-1"))
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        content = response.read()
        joined: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            joined[key] = f"{joined[key]}, {value}" if key in joined else value
        return Reply(response.status, joined, content)
    finally:
        connection.close()


# -- server processes -------------------------------------------------------------------------------

CONSUMER_AUTH = str(Path(sys.executable).with_name("consumer-auth"))
"""The installed ``consumer-auth`` command of the running environment."""

_UVICORN_PORT = re.compile(r"running on https?://[^ ]+:(\d+)")


class Process:
    """A server in a subprocess: its output collected line by line, stopped with SIGTERM."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group: kill() reaches worker processes too
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._changed = threading.Condition()
        self._ended = 0  # output streams at their end
        self._collectors = [
            threading.Thread(target=self._collect, args=(stream, lines), daemon=True)
            for stream, lines in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))
        ]
        for collector in self._collectors:
            collector.start()
        _running.append(self.kill)

    def _collect(self, stream: Any, lines: list[str]) -> None:
        for line in stream:
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._ended += 1
            self._changed.notify_all()

    def wait_for(
        self, pattern: str | re.Pattern[str], lines: list[str], timeout: float = 30, count: int = 1
    ) -> re.Match[str]:
        """The ``count``-th line of ``lines`` (``self.stdout`` or ``self.stderr``) matching ``pattern``."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [match for line in lines if (match := compiled.search(line))]
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or self._ended == 2:
                    raise AssertionError(
                        f"no line matching {compiled.pattern!r}; stdout={self.stdout!r} stderr={self.stderr!r}"
                    )
                self._changed.wait(min(left, 0.5))

    def uvicorn_port(self, workers: int = 1) -> int:
        """The port a ``consumer-auth serve``/``demo`` process listens on, once every worker is ready."""
        port = int(self.wait_for(_UVICORN_PORT, self.stderr).group(1))
        self.wait_for("Application startup complete", self.stderr, count=workers)
        return port

    def memory(self) -> tuple[int, int]:
        """(current, peak) resident memory of the process, in bytes (Linux ``/proc``)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit status (killed if it does not stop within ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        """Kill the process and everything it started; close its output once it has all been read."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for collector in self._collectors:
            collector.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


# -- a raw-socket upstream --------------------------------------------------------------------------


class _RawExchange:
    """httptools callbacks for one connection of :class:`RawUpstream`: each complete request answered."""

    def __init__(self, upstream: RawUpstream, sock: socket.socket) -> None:
        self.upstream = upstream
        self.sock = sock
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        target = self.url.decode("latin-1")
        seen = {"target": target, "headers": self.headers, "body": self.body.decode("latin-1")}
        self.upstream.requests.append(seen)
        body = json.dumps(seen).encode()
        answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (
            len(body),
            body,
        )
        extra = self.upstream.extra.get(target.partition("?")[0], b"")
        self.sock.sendall(answer + extra)
        self.url, self.headers, self.body = b"", [], b""


class RawUpstream:
    """An upstream on a bare socket that logs every byte it receives and reads requests as llhttp does
    (httptools, the parser of uvicorn and Node): each request it parses is answered 200 with a JSON
    ``{"target", "headers", "body"}`` of what it read, on the same keep-alive connection.

    ``extra`` maps a path to bytes written right after that path's answer (a second, unasked answer).
    """

    def __init__(self, extra: dict[str, bytes] | None = None) -> None:
        import httptools

        self._parser_class = httptools.HttpRequestParser
        self.extra = extra or {}
        self.received: list[bytes] = []
        self.requests: list[dict[str, Any]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._sockets: list[socket.socket] = []
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True, name="raw-upstream").start()
        _running.append(self.stop)

    def _accept(self) -> None:
        while not self._stopped:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        parser = self._parser_class(_RawExchange(self, sock))
        with contextlib.suppress(Exception):  # a parse error or a reset ends the connection
            while data := sock.recv(65536):
                self.received.append(data)
                parser.feed_data(data)
        with contextlib.suppress(OSError):
            sock.close()

    def targets(self) -> list[str]:
        return [seen["target"] for seen in self.requests]

    def stop(self) -> None:
        self._stopped = True
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _QuietWSGIRefHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


class WSGIRefServer:
    """A WSGI app on the standard library's ``wsgiref`` server (one request per connection), in a thread.

    ``wsgiref`` maps header names the CGI way: ``X-A`` and ``X_A`` both become ``HTTP_X_A``, repeats
    joined by commas; the tests use it as the reading of CGI-style servers.
    """

    def __init__(self, app: Any) -> None:
        self.server = wsgiref.simple_server.make_server(
            "127.0.0.1", 0, app, handler_class=_QuietWSGIRefHandler
        )
        self.port = int(self.server.server_port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        _running.append(self.stop)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        close = getattr(self.server.get_app(), "close", None)
        if close is not None:
            close()
