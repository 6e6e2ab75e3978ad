"""``consumer-auth serve --metrics HOST:PORT``: the metrics listener, and the metrics of every worker.

One worker: the proxy counts in a registry of its own, which a listener thread of the same process
serves. ``--workers N``: ``prometheus_client``'s multiprocess mode. Before the workers start, the parent
points ``PROMETHEUS_MULTIPROC_DIR`` at a new temporary directory; each worker (a new interpreter, which
inherits it) writes its counts to memory-mapped files there; the listener, a thread of the parent,
adds up every worker's files at each scrape, those of workers that died and were replaced included, so
no count is lost. The directory is removed when ``serve`` exits. Why this mode and not one registry per
worker, and what it costs, is in ``docs/metrics.md``.

Nothing here is imported, and ``prometheus_client`` is not loaded, unless ``--metrics`` is given.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING, Any

from ._args import BadValue

if TYPE_CHECKING:
    from .proxy.asgi import ASGIProxy

__all__ = ["MULTIPROC_ENV", "address", "instrument", "start"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Where ``prometheus_client``'s multiprocess mode keeps each process's counts (as
``consumer_auth.metrics.MULTIPROCESS_ENV``, which this module cannot import without the library)."""


def address(text: str) -> tuple[str, int]:
    """The ``type=`` of ``--metrics``: ``HOST:PORT`` (``[::1]:9091`` for IPv6; port 0 for any free one)."""
    host, colon, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise BadValue(f"--metrics: expected HOST:PORT (such as 127.0.0.1:9091), got {text!r}")
    return host, int(port)


def start(where: tuple[str, int] | None, workers: int, proxy: ASGIProxy) -> Any:
    """Start serving ``/metrics`` on ``where`` (nothing when it is ``None``).

    With one worker, ``proxy`` (the app that worker serves) counts into the listener's registry; with
    more, each worker counts through :func:`instrument`. Returns ``None`` (no ``--metrics``), the
    listening server, or a one-line reason it cannot listen.
    """
    if where is None:
        return None
    host, port = where
    directory = None
    if workers > 1:
        directory = tempfile.mkdtemp(prefix="consumer-auth-metrics-")
        os.environ[MULTIPROC_ENV] = directory  # before any worker starts: they inherit it
    from . import metrics

    if directory is not None:
        registry = metrics.multiprocess_registry(directory)
    else:
        proxy.metrics = metrics.Metrics(None)
        registry = proxy.metrics.registry
    try:
        server = metrics.start_http_server(port, host, registry=registry)
    except OSError as error:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        return f"--metrics: cannot listen on {host}:{port} ({error.strerror or error})"
    shown = f"[{host}]" if ":" in host else host
    print(
        f"consumer-auth: metrics on http://{shown}:{server.server_port}/metrics"
        + (f" (every worker counted, {workers} workers)" if directory is not None else ""),
        file=sys.stderr,
        flush=True,
    )

    def stop() -> None:
        server.shutdown()
        server.server_close()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    atexit.register(stop)
    return server


def instrument(proxy: ASGIProxy) -> None:
    """Count a worker's requests in the shared multiprocess directory (``serve --workers N --metrics``)."""
    from .metrics import Metrics

    proxy.metrics = Metrics(None)  # the values go to the directory; nobody reads this registry
