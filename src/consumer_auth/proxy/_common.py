"""What both forwarders share besides the rules: upstream checks, fault logging and the access log."""

from __future__ import annotations

import logging
import ssl
import time
from typing import TYPE_CHECKING

from consumer_auth.errors import ConfigError
from consumer_auth.sansio.decision import Allow, Decision, MatchedRoute, RequestFacts
from consumer_auth.sansio.upstream import Upstream, UpstreamNode

if TYPE_CHECKING:
    from consumer_auth.metrics import Metrics
    from consumer_auth.sansio.gateway import Gateway

__all__ = [
    "ACCESS_LOGGER",
    "Exchange",
    "check_upstreams",
    "checked_upstreams",
    "default_upstream",
    "probe_tls",
    "tls_for",
    "upstream_for",
]

logger = logging.getLogger("consumer_auth.proxy")
ACCESS_LOGGER = logging.getLogger("consumer_auth.access")
"""One INFO line per request: peer, method, path (never the query string or a header), status, bytes,
duration, route, consumer and upstream node."""


def default_upstream(value: Upstream | str | object | None) -> Upstream | None:
    """The proxy's default upstream, validated (errors are placed under ``upstream``)."""
    if value is None:
        return None
    try:
        return Upstream.parse(value)
    except ConfigError as error:
        raise error.within("upstream") from None


def check_upstreams(gateway: Gateway, default: Upstream | None) -> None:
    """Refuse to build a proxy that would have nowhere to send a request.

    Raises:
        ConfigError: at ``routes[i].upstream`` for the first route with neither an upstream of its own
            nor a service upstream, or at ``unmatched`` for ``unmatched: pass`` — unless a default
            upstream is given, which then serves both.
    """
    if default is not None:
        return
    for route in gateway.compiled_routes:
        if route.upstream is None:
            named = f" {route.id!r}" if route.id else ""
            raise ConfigError(
                f"routes[{route.order}].upstream",
                f"route{named} has no upstream (give it or its service one, or give the proxy a default upstream)",
            )
    if gateway.unmatched == "pass":
        raise ConfigError(
            "unmatched", "'pass' needs a default upstream in proxy mode, to forward unmatched requests to"
        )


def upstream_for(decision: Allow, default: Upstream | None) -> Upstream | None:
    """Where an allowed request goes: its route's upstream, else the default one."""
    route = decision.route
    if route is not None and route.upstream is not None:
        return route.upstream
    return default


def tls_for(upstream: Upstream, node: UpstreamNode) -> tuple[str | None, ssl.SSLContext | None]:
    """The TLS server name and client context for a connection to ``node`` (``None, None`` for http)."""
    if upstream.scheme != "https":
        return None, None
    return upstream.server_name(node), upstream.tls.context()


def probe_tls(upstream: Upstream, node: UpstreamNode) -> tuple[str, str | None, ssl.SSLContext | None]:
    """How an active health probe reaches ``node``: its kind (``http``, ``https`` or ``tcp``; the
    upstream's scheme unless ``checks.active.type`` says), and for ``https`` the TLS server name and
    context of the upstream's ``tls`` settings (``None, None`` otherwise)."""
    checks = upstream.checks
    kind = (checks.active.type if checks is not None else None) or upstream.scheme
    if kind != "https":
        return kind, None, None
    return kind, upstream.server_name(node), upstream.tls.context()


def checked_upstreams(gateway: Gateway, default: Upstream | None) -> list[Upstream]:
    """The upstreams in force now that have health checks (each once)."""
    found: dict[Upstream, None] = {}
    for route in gateway.compiled_routes:
        if route.upstream is not None and route.upstream.checks is not None:
            found[route.upstream] = None
    if default is not None and default.checks is not None:
        found[default] = None
    return list(found)


def log_fault(what: str, decision: Allow, node: UpstreamNode | None, error: BaseException | None) -> None:
    """Log an upstream fault on one line: what happened, where; the exception's type, never its text."""
    route = decision.route.id if decision.route is not None else None
    logger.warning(
        "%s (upstream %s, route %s%s)",
        what,
        node.authority if node is not None else "-",
        route or "-",
        f", {type(error).__name__}" if error is not None else "",
    )


class Exchange:
    """What the access log (and the metrics, when on) say about one request; filled in as it goes.

    With ``metrics``, the forwarder also sets ``decided`` (when the decision was made, including any
    password verification) and ``upstream_seconds`` (from the first connection attempt to the upstream's
    response head); without, neither is measured.
    """

    __slots__ = (
        "_looked_up",
        "_route",
        "decided",
        "decision",
        "facts",
        "gateway",
        "method",
        "metrics",
        "node",
        "path",
        "peer",
        "sent",
        "started",
        "status",
        "upstream_seconds",
    )

    def __init__(
        self,
        peer: str | None,
        method: str,
        path: str | bytes,
        gateway: Gateway | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.started = time.perf_counter()
        self.peer = peer
        self.method = method
        self.path = path
        self.gateway = gateway
        self.status = 0
        self.sent = 0
        self.facts: RequestFacts | None = None
        self.decision: Decision | None = None
        self.node: UpstreamNode | None = None
        self.metrics = metrics
        self.decided = 0.0
        self.upstream_seconds: float | None = None
        self._route: MatchedRoute | None = None
        self._looked_up = False

    def route(self) -> MatchedRoute | None:
        """The route the request was decided on (``None`` when unmatched), for the log and the metrics.

        An :class:`Allow` names it; a rejection does not carry one (rejections are shared constants), so
        the route its path matches is looked up, once, and only when asked.
        """
        if self._looked_up:
            return self._route
        decision = self.decision
        route: MatchedRoute | None = None
        if isinstance(decision, Allow):
            route = decision.route
        elif decision is not None and self.facts is not None and self.gateway is not None:
            route = self.gateway.match(self.facts)
        self._route = route
        self._looked_up = True
        return route

    def log(self) -> None:
        """Write the access-log line (when INFO is enabled for ``consumer_auth.access``) and count the
        request in the metrics (when on). Called once, when the exchange is over."""
        if self.metrics is not None:
            self.metrics.exchange(self)
        if not ACCESS_LOGGER.isEnabledFor(logging.INFO):
            return
        decision = self.decision
        consumer = None
        if isinstance(decision, Allow) and decision.consumer is not None:
            consumer = decision.consumer.username
        route = self.route()
        path = self.path if isinstance(self.path, str) else self.path.decode("ascii", "backslashreplace")
        ACCESS_LOGGER.info(
            '%s "%s %s" %d %d %.1fms route=%s consumer=%s upstream=%s',
            self.peer or "-",
            self.method,
            path,
            self.status,
            self.sent,
            (time.perf_counter() - self.started) * 1000,
            (route.id if route is not None else None) or "-",
            consumer or "-",
            self.node.authority if self.node is not None else "-",
        )
