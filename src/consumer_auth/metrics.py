"""Prometheus metrics of the gateway, in every mode (``pip install 'consumer-auth[metrics]'``).

This module is long because it holds both ways of counting (plain counts read at each scrape, and
``prometheus_client``'s own objects for its multiprocess mode) beside the two counting middlewares.

The only module that imports ``prometheus_client``; nothing imports it unless metrics are asked for, so
a gateway without them neither loads the library nor does any per-request work for it. The families,
their labels and the bounds of those labels are in ``docs/metrics.md``:

- ``consumer_auth_http_status_total{code, route, service, consumer}``: requests by the status answered;
- ``consumer_auth_auth_total{outcome, reason, route, service}``: decisions by reason code;
- ``consumer_auth_http_latency_seconds{type, route, service}``: ``type="decision"`` (the gateway's own
  time, password verification included) and, in the proxies, ``type="upstream"``;
- ``consumer_auth_upstream_status{node}``: 1 when a node of an upstream with health checks takes
  traffic, 0 when it is unhealthy.

Label values come from the configuration only: route and service ids, the names of configured consumers
(a username a client typed is never one), status codes and reason codes.

Example:
    >>> from consumer_auth import Gateway, Consumer
    >>> from consumer_auth.metrics import Metrics
    >>> from prometheus_client import CollectorRegistry
    >>> metrics = Metrics(CollectorRegistry())
    >>> app = Gateway(consumers=[Consumer("alex", password="123456")]).wsgi(lambda e, s: [], metrics=metrics)
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left
from collections.abc import Awaitable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Metric
from prometheus_client import make_asgi_app as _make_asgi_app
from prometheus_client import make_wsgi_app as _make_wsgi_app
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from ._verify import threaded_verifier
from .asgi import ASGIGatewayMiddleware, facts_from_scope, resolve, send_reject, with_headers
from .sansio.decision import Allow, Decision, MatchedRoute, Pending, Reject
from .sansio.log import decision_reason
from .wsgi import GatewayMiddleware, apply_allow, facts_from_environ

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

    from .asgi import ASGIApp
    from .sansio.gateway import Gateway
    from .sansio.upstream import UpstreamNode

__all__ = [
    "LATENCY_BUCKETS",
    "MULTIPROCESS_ENV",
    "Metrics",
    "asgi_app",
    "default_metrics",
    "multiprocess_registry",
    "start_http_server",
    "wsgi_app",
]

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Set when ``Metrics`` is made: ``prometheus_client``'s multiprocess mode (its metric objects, writing to
memory-mapped files that :func:`multiprocess_registry` adds up); unset: plain counts in this process,
read at each scrape (cheaper per request)."""

LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Upper bounds (seconds) of the latency histograms: from 50 µs (a remembered password) to a minute
(an upstream's read timeout)."""


class Finished(Protocol):
    """What :meth:`Metrics.exchange` reads of a proxied request that is over (the proxies' ``Exchange``)."""

    decision: Decision | None
    status: int
    started: float
    decided: float
    upstream_seconds: float | None

    def route(self) -> MatchedRoute | None:
        """The route the request was decided on (a rejected one's: the route its path matches)."""


class Metrics:
    """The gateway's Prometheus metrics, registered in ``registry`` (``None``: a new registry of its own).

    Give one to :meth:`consumer_auth.Gateway.wsgi`, :meth:`~consumer_auth.Gateway.asgi`,
    :meth:`~consumer_auth.Gateway.asgi_proxy` or :meth:`~consumer_auth.Gateway.wsgi_proxy` as
    ``metrics=``; several adapters may share one. ``consumer-auth serve --metrics`` makes its own.

    Args:
        registry: Where the four families are registered (default: ``prometheus_client``'s global
            ``REGISTRY``, which ``start_http_server`` and ``make_wsgi_app`` serve by default).
        buckets: Upper bounds, in seconds, of the latency histograms.

    Raises:
        ValueError: the families are already registered in ``registry`` (make one ``Metrics`` per
            registry, or use :func:`default_metrics`).

    Security:
        No label value comes from a request: a route is named by its id, a consumer by its configured
        name (``""`` when the request authenticated no consumer), so a client sending made-up usernames
        creates no series.
    """

    def __init__(
        self, registry: CollectorRegistry | None = REGISTRY, *, buckets: Iterable[float] = LATENCY_BUCKETS
    ) -> None:
        if registry is None:
            registry = CollectorRegistry()
        self.registry = registry
        self.buckets = tuple(sorted(buckets))
        self._lock = threading.Lock()
        # Counts by (route, service, consumer, reason, outcome), then by status; histograms by (type,
        # route, service) as [bucket counts..., +Inf count, sum]; node health by authority.
        self._counts: dict[tuple[str, str, str, str, str], dict[int, int]] = {}
        self._histograms: dict[tuple[str, str, str], list[float]] = {}
        # The series of the decisions seen lately, by the identity of the decision and its route: the
        # gateway hands out the same Allow and Reject objects again and again, so most requests find
        # their labels here without computing them (bounded: emptied when full).
        self._seen: dict[int | tuple[int, int], _Seen] = {}
        self._nodes: dict[str, int] = {}
        self._native: _Native | None = None
        if os.environ.get(MULTIPROCESS_ENV):
            # prometheus_client's multiprocess mode: the counts must go to its memory-mapped files,
            # which only its own metric objects write (consumer-auth serve --workers N).
            self._native = _Native(registry, self.buckets)
        else:
            registry.register(_Collector(self))

    def record(
        self,
        route: MatchedRoute | None,
        decision: Decision,
        status: int,
        decision_seconds: float,
        upstream_seconds: float | None = None,
    ) -> None:
        """Count one request: its answer's ``status``, the ``decision`` and how long it took.

        ``route`` is the route that decided (``None``: none matched); the consumer is the decision's
        (an :class:`Allow`'s), never one a client named.
        """
        if self._native is not None:
            self._native.record(_key(route, decision, status), decision_seconds, upstream_seconds)
            return
        # An Allow names its route (the key :meth:`allowed` looks up); a Reject is shared by routes.
        own = isinstance(decision, Allow) and route is decision.route
        key: int | tuple[int, int] = id(decision) if own else (id(decision), id(route))
        seen = self._seen.get(key)
        if seen is None or seen[0] is not decision or seen[1] is not route:
            seen = self._series(route, decision, key)
        counts, histogram = seen[2], seen[3]
        index = bisect_left(self.buckets, decision_seconds)
        with self._lock:
            counts[status] = counts.get(status, 0) + 1
            histogram[index] += 1
            histogram[-1] += decision_seconds
        if upstream_seconds is not None:
            label, service = (route.label, route.service_id or "") if route is not None else ("", "")
            index = bisect_left(self.buckets, upstream_seconds)
            with self._lock:
                upstream = self._histograms.get(("upstream", label, service))
                if upstream is None:
                    upstream = self._new_histogram(("upstream", label, service))
                upstream[index] += 1
                upstream[-1] += upstream_seconds

    def allowed(self, decision: Allow, status: int, seconds: float) -> None:
        """Count an allowed request answered ``status`` (the in-process middlewares' shortcut of
        :meth:`record`, for the decision's own route)."""
        seen = self._seen.get(id(decision))  # never filled in multiprocess mode
        if seen is None or seen[0] is not decision:
            self.record(decision.route, decision, status, seconds)
            return
        counts, histogram = seen[2], seen[3]
        index = bisect_left(self.buckets, seconds)
        lock = self._lock
        lock.acquire()  # nothing below raises; cheaper than ``with`` on the hot path
        counts[status] = counts.get(status, 0) + 1
        histogram[index] += 1
        histogram[-1] += seconds
        lock.release()

    def _series(self, route: MatchedRoute | None, decision: Decision, key: int | tuple[int, int]) -> _Seen:
        label, service, consumer, _status, reason, outcome = _key(route, decision, 0)
        with self._lock:
            counts = self._counts.get((label, service, consumer, reason, outcome))
            if counts is None:
                counts = self._counts[label, service, consumer, reason, outcome] = {}
            histogram = self._histograms.get(("decision", label, service))
            if histogram is None:
                histogram = self._new_histogram(("decision", label, service))
            if len(self._seen) >= _SEEN:
                self._seen.clear()
            seen = self._seen[key] = (decision, route, counts, histogram)
        return seen

    def _new_histogram(self, key: tuple[str, str, str]) -> list[float]:
        histogram: list[float] = [0] * (len(self.buckets) + 1)
        histogram.append(0.0)
        self._histograms[key] = histogram
        return histogram

    def exchange(self, exchange: Finished) -> None:
        """Count a request the proxies forwarded or answered (their ``Exchange`` once it is over)."""
        decision = exchange.decision
        if decision is None:  # the client left before the decision: nothing was decided
            return
        decided = exchange.decided or time.perf_counter()
        self.record(
            exchange.route(), decision, exchange.status, decided - exchange.started, exchange.upstream_seconds
        )

    def node_health(self, node: UpstreamNode, healthy: bool) -> None:
        """Set a node's health (the proxies' health checks call this)."""
        if self._native is not None:
            self._native.upstream_status.labels(node.authority).set(1 if healthy else 0)
            return
        with self._lock:
            self._nodes[node.authority] = 1 if healthy else 0


_SEEN = 4096
_Seen = tuple[Decision, "MatchedRoute | None", dict[int, int], list[float]]
"""A decision and its route, the counts of their series by status and their decision histogram."""


def _key(route: MatchedRoute | None, decision: Decision, status: int) -> tuple[str, str, str, int, str, str]:
    """The label values of a request: route, service, consumer, status, reason, outcome."""
    if route is not None:
        label, service = route.label, route.service_id or ""
    else:
        label = service = ""
    if isinstance(decision, Reject):
        return label, service, "", status, decision.reason, "reject"
    consumer = decision.consumer.username if decision.consumer is not None else ""
    return label, service, consumer, status, decision_reason(decision), "allow"


class _Collector:
    """Turns a :class:`Metrics`' plain counts into the four families, at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterator[Metric]:
        """The four families, empty: the registry refuses a second ``Metrics`` by their names."""
        yield CounterMetricFamily("consumer_auth_http_status", _STATUS_HELP, labels=_STATUS_LABELS)
        yield CounterMetricFamily("consumer_auth_auth", _AUTH_HELP, labels=_AUTH_LABELS)
        yield HistogramMetricFamily(_LATENCY, _LATENCY_HELP, labels=_LATENCY_LABELS)
        yield GaugeMetricFamily(_UPSTREAM, _UPSTREAM_HELP, labels=("node",))

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        with metrics._lock:
            counts = {key: dict(by_status) for key, by_status in metrics._counts.items()}
            histograms = {key: list(values) for key, values in metrics._histograms.items()}
            nodes = dict(metrics._nodes)
        statuses: dict[tuple[str, str, str, str], int] = {}
        decisions: dict[tuple[str, str, str, str], int] = {}
        for (route, service, consumer, reason, outcome), by_status in counts.items():
            for status, count in by_status.items():
                one = (str(status), route, service, consumer)
                statuses[one] = statuses.get(one, 0) + count
                other = (outcome, reason, route, service)
                decisions[other] = decisions.get(other, 0) + count
        family = CounterMetricFamily("consumer_auth_http_status", _STATUS_HELP, labels=_STATUS_LABELS)
        for labels, count in statuses.items():
            family.add_metric(labels, count)
        yield family
        family = CounterMetricFamily("consumer_auth_auth", _AUTH_HELP, labels=_AUTH_LABELS)
        for labels, count in decisions.items():
            family.add_metric(labels, count)
        yield family
        latency = HistogramMetricFamily(_LATENCY, _LATENCY_HELP, labels=_LATENCY_LABELS)
        bounds = [floatToGoString(bound) for bound in metrics.buckets] + ["+Inf"]  # type: ignore[no-untyped-call]
        for series, values in histograms.items():
            cumulative, total = [], 0.0
            for bound, observed in zip(bounds, values[:-1], strict=True):
                total += observed
                cumulative.append((bound, total))
            latency.add_metric(series, cumulative, values[-1])
        yield latency
        gauge = GaugeMetricFamily(_UPSTREAM, _UPSTREAM_HELP, labels=("node",))
        for node, healthy in nodes.items():
            gauge.add_metric((node,), healthy)
        yield gauge


class _Native:
    """The four families as ``prometheus_client`` metric objects (its multiprocess mode needs them)."""

    def __init__(self, registry: CollectorRegistry, buckets: tuple[float, ...]) -> None:
        self.requests = Counter("consumer_auth_http_status", _STATUS_HELP, _STATUS_LABELS, registry=registry)
        self.decisions = Counter("consumer_auth_auth", _AUTH_HELP, _AUTH_LABELS, registry=registry)
        self.latency = Histogram(_LATENCY, _LATENCY_HELP, _LATENCY_LABELS, buckets=buckets, registry=registry)
        self.upstream_status = Gauge(
            _UPSTREAM, _UPSTREAM_HELP, ("node",), registry=registry, multiprocess_mode="mostrecent"
        )
        self._lock = threading.Lock()
        self._children: dict[tuple[str, str, str, int, str, str], tuple[Any, Any, Any]] = {}

    def record(
        self, key: tuple[str, str, str, int, str, str], seconds: float, upstream: float | None
    ) -> None:
        children = self._children.get(key)
        if children is None:
            with self._lock:
                route, service, consumer, status, reason, outcome = key
                children = self._children[key] = (
                    self.requests.labels(str(status), route, service, consumer),
                    self.decisions.labels(outcome, reason, route, service),
                    self.latency.labels("decision", route, service),
                )
        children[0].inc()
        children[1].inc()
        children[2].observe(seconds)
        if upstream is not None:
            self.latency.labels("upstream", key[0], key[1]).observe(upstream)


_STATUS_HELP = "Requests by the status answered, route, service and consumer"
_STATUS_LABELS = ("code", "route", "service", "consumer")
_AUTH_HELP = "Gateway decisions by outcome (allow or reject) and reason code"
_AUTH_LABELS = ("outcome", "reason", "route", "service")
_LATENCY = "consumer_auth_http_latency_seconds"
_LATENCY_HELP = (
    "Time of the gateway decision (type=decision) and of the upstream, to its response head (type=upstream)"
)
_LATENCY_LABELS = ("type", "route", "service")
_UPSTREAM = "consumer_auth_upstream_status"
_UPSTREAM_HELP = "Health of the upstream nodes with health checks: 1 takes traffic, 0 unhealthy"


_default: Metrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> Metrics:
    """The process-wide :class:`Metrics` on ``prometheus_client``'s global registry (made once), which
    ``metrics=True`` means."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Metrics()
    return _default


def chosen(metrics: Metrics | bool | None) -> Metrics | None:
    """What a ``metrics=`` argument means: a :class:`Metrics`, ``True`` for :func:`default_metrics`,
    ``False`` or ``None`` for none."""
    if metrics is True:
        return default_metrics()
    if metrics is None or metrics is False:
        return None
    if not isinstance(metrics, Metrics):
        raise TypeError(f"metrics: expected a consumer_auth.metrics.Metrics or a bool, got {metrics!r}")
    return metrics


def wsgi_app(metrics: Metrics | None = None) -> WSGIApplication:
    """A WSGI app answering the Prometheus text of ``metrics``' registry (default: the global one), to
    mount at ``/metrics`` of an app."""
    registry = metrics.registry if metrics is not None else REGISTRY
    app: WSGIApplication = _make_wsgi_app(registry)
    return app


def asgi_app(metrics: Metrics | None = None) -> ASGIApp:
    """An ASGI app answering the Prometheus text of ``metrics``' registry (default: the global one):
    ``app.mount("/metrics", asgi_app())`` in FastAPI or Starlette."""
    registry = metrics.registry if metrics is not None else REGISTRY
    app: ASGIApp = _make_asgi_app(registry)
    return app


def start_http_server(
    port: int,
    addr: str = "127.0.0.1",
    metrics: Metrics | None = None,
    *,
    registry: CollectorRegistry | None = None,
) -> Any:
    """Serve ``metrics``' registry (or ``registry``; default: the global one) on a port of its own, from
    a daemon thread; returns the server (``server.server_port`` is its port, ``server.shutdown()``
    stops it).

    Raises:
        OSError: the address cannot be listened on.
    """
    if registry is None:
        registry = metrics.registry if metrics is not None else REGISTRY
    server, _thread = _start_http_server(port, addr=addr, registry=registry)
    return server


def multiprocess_registry(directory: str) -> CollectorRegistry:
    """A registry adding up the counts every process wrote to ``directory`` (``prometheus_client``'s
    multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` was ``directory`` when they imported it)."""
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


# -- the in-process adapters, counting ------------------------------------------------------------------


class MeteredGatewayMiddleware(GatewayMiddleware):
    """:class:`~consumer_auth.wsgi.GatewayMiddleware` that also counts each request in ``metrics``
    (made by ``gateway.wsgi(app, metrics=...)``).

    A request is counted when its answer starts: a rejection at once, an allowed request when the app
    calls ``start_response`` without ``exc_info`` (a second call, with ``exc_info`` after an error, is
    the same request).
    """

    def __init__(self, app: WSGIApplication, gateway: Gateway, metrics: Metrics) -> None:
        super().__init__(app, gateway)
        self.metrics = metrics
        self._count = metrics.allowed

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = _clock()
        facts = facts_from_environ(environ)
        decision = self.gateway.decide(facts)
        if decision.__class__ is not Allow:  # the usual answer skips both checks
            if isinstance(decision, Pending):
                decision = threaded_verifier().run(decision)
            if isinstance(decision, Reject):
                seconds = _clock() - started
                self.metrics.record(self.gateway.match(facts), decision, decision.status, seconds)
                start_response(decision.status_line, list(decision.wsgi_headers))
                return [] if facts.method == "HEAD" else [decision.body]
        seconds = _clock() - started
        apply_allow(environ, facts, decision)
        count = self._count
        extra = decision.response_headers
        allowed = decision

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            # Counted once: a second call (an error after the start) carries exc_info.
            if exc_info is None:
                count(allowed, _code(status), seconds)
            return start_response(status, [*headers, *extra] if extra else headers, exc_info)

        return self.app(environ, start)


_clock = time.perf_counter
_CODES: dict[str, int] = {}


def _code(status: str) -> int:
    """The code of a WSGI status line (``"200 OK"``: 200), remembered per line."""
    code = _CODES.get(status)
    if code is None:
        code = int(status[:3])
        if len(_CODES) < 1024:
            _CODES[status] = code
    return code


class MeteredASGIGatewayMiddleware(ASGIGatewayMiddleware):
    """:class:`~consumer_auth.asgi.ASGIGatewayMiddleware` that also counts each request in ``metrics``
    (made by ``gateway.asgi(app, metrics=...)``): a rejection at once, an allowed request when the app
    starts its response (a websocket the app accepts counts as 101)."""

    def __init__(self, app: ASGIApp, gateway: Gateway, metrics: Metrics) -> None:
        super().__init__(app, gateway)
        self.metrics = metrics
        self._count = metrics.allowed

    async def _handle(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = _clock()
        facts = facts_from_scope(scope)
        decided = self.gateway.decide(facts)
        if isinstance(decided, Pending):
            decided = await resolve(decided, self.pool)
        seconds = _clock() - started
        if isinstance(decided, Reject):
            self.metrics.record(self.gateway.match(facts), decided, decided.status, seconds)
            await send_reject(scope, receive, send, decided)
            return
        decision = decided
        if decision.raw_response_headers:
            send = with_headers(send, decision.raw_response_headers)
        inner = send
        count = self._count

        def sending(message: Any) -> Awaitable[None]:
            # A plain function handing back the inner send's awaitable: no coroutine of its own per
            # message. A response starts once, so it is counted once.
            kind = message["type"]
            if kind == "http.response.start" or kind == "websocket.http.response.start":
                count(decision, message["status"], seconds)
            elif kind == "websocket.accept":
                count(decision, 101, seconds)
            return inner(message)

        await self.app(self.allowed_scope(scope, facts, decision), receive, sending)

    if not TYPE_CHECKING:
        __call__ = _handle
