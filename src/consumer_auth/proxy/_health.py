"""Upstream node health (``upstream.checks``): counters, states and the probe schedule, without I/O.

Both forwarders keep one :class:`Health` and report to it what happened on each exchange (passive
checks) and on each probe (active checks); the probe itself is sent by the forwarder (an asyncio task in
the ASGI proxy, a thread in the WSGI one). As in APISIX's healthcheck library, a node has one state,
healthy or unhealthy, and counters of the outcomes in a row: a success resets the failure counters, a
failure of one kind resets the success counter, and reaching a threshold flips the state (then every
counter starts again). Each change of state is logged once, at WARNING (unhealthy) or INFO (healthy),
and told to ``on_change`` (the metrics' node health gauge), as is each node's first appearance.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Iterable

from consumer_auth.sansio.upstream import ActiveCheck, PassiveCheck, Upstream, UpstreamNode

__all__ = ["Health", "Outcome", "probe_request", "probe_status"]

logger = logging.getLogger("consumer_auth.proxy")

_NONE: frozenset[UpstreamNode] = frozenset()


class Outcome(enum.Enum):
    """What one exchange or probe said about a node."""

    SUCCESS = "success"
    HTTP_FAILURE = "http failure"
    TCP_FAILURE = "tcp failure"
    TIMEOUT = "timeout"


_PLURAL = {
    Outcome.SUCCESS: "successes",
    Outcome.HTTP_FAILURE: "http failures",
    Outcome.TCP_FAILURE: "tcp failures",
    Outcome.TIMEOUT: "timeouts",
}


class _Node:
    __slots__ = ("counts", "due", "healthy", "probing")

    def __init__(self) -> None:
        self.healthy = True
        self.counts = dict.fromkeys(Outcome, 0)
        self.due = 0.0  # when the next active probe is due (monotonic seconds)
        self.probing = False


def _threshold(check: ActiveCheck | PassiveCheck, outcome: Outcome) -> int:
    if outcome is Outcome.SUCCESS:
        return check.healthy_successes
    if outcome is Outcome.HTTP_FAILURE:
        return check.http_failures
    if outcome is Outcome.TCP_FAILURE:
        return check.tcp_failures
    return check.timeouts


class Health:
    """The health of the nodes of every upstream that has ``checks`` (thread-safe).

    Nodes start healthy. Upstreams without ``checks`` are never tracked: :meth:`unhealthy` answers the
    empty set for them without taking a lock. ``on_change(node, healthy)`` is called when a node is
    first tracked (healthy) and at each change of its state.
    """

    __slots__ = ("_down", "_lock", "_nodes", "on_change")

    def __init__(self, on_change: Callable[[UpstreamNode, bool], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[tuple[Upstream, UpstreamNode], _Node] = {}
        self._down: dict[Upstream, frozenset[UpstreamNode]] = {}
        self.on_change = on_change

    def unhealthy(self, upstream: Upstream) -> frozenset[UpstreamNode]:
        """The nodes of ``upstream`` that get no traffic now."""
        if upstream.checks is None:
            return _NONE
        return self._down.get(upstream, _NONE)

    def report_status(self, upstream: Upstream, node: UpstreamNode, status: int) -> None:
        """A proxied response's status (passive checks; nothing happens without them)."""
        checks = upstream.checks
        if checks is None or checks.passive is None:
            return
        passive = checks.passive
        if status in passive.unhealthy_statuses:
            self._report(upstream, node, Outcome.HTTP_FAILURE, passive)
        elif status in passive.healthy_statuses:
            self._report(upstream, node, Outcome.SUCCESS, passive)

    def report_fault(self, upstream: Upstream, node: UpstreamNode, outcome: Outcome) -> None:
        """A proxied exchange that failed: ``TCP_FAILURE`` or ``TIMEOUT`` (passive checks)."""
        checks = upstream.checks
        if checks is not None and checks.passive is not None:
            self._report(upstream, node, outcome, checks.passive)

    def report_probe(
        self, upstream: Upstream, node: UpstreamNode, outcome: Outcome | None, now: float
    ) -> None:
        """The outcome of an active probe (``None``: a status in neither list, which counts for nothing);
        schedules the node's next probe from ``now``."""
        checks = upstream.checks
        if checks is None:
            return
        if outcome is not None:
            self._report(upstream, node, outcome, checks.active)
        with self._lock:
            state = self._state(upstream, node)
            state.probing = False
            active = checks.active
            state.due = now + (active.healthy_interval if state.healthy else active.unhealthy_interval)

    def due(self, upstreams: Iterable[Upstream], now: float) -> list[tuple[Upstream, UpstreamNode]]:
        """The (upstream, node) pairs whose probe is due (each is then marked as being probed)."""
        found = []
        with self._lock:
            for upstream in upstreams:
                if upstream.checks is None:
                    continue
                for node in upstream.nodes:
                    state = self._state(upstream, node)
                    if not state.probing and state.due <= now:
                        state.probing = True
                        found.append((upstream, node))
        return found

    def next_due(self, upstreams: Iterable[Upstream], now: float, longest: float) -> float:
        """Seconds until the next probe of these upstreams is due (at most ``longest``)."""
        wait = longest
        with self._lock:
            for upstream in upstreams:
                if upstream.checks is None:
                    continue
                for node in upstream.nodes:
                    state = self._nodes.get((upstream, node))
                    if state is None:
                        return 0.0
                    if not state.probing:
                        wait = min(wait, max(state.due - now, 0.0))
        return wait

    def _state(self, upstream: Upstream, node: UpstreamNode) -> _Node:
        state = self._nodes.get((upstream, node))
        if state is None:
            state = self._nodes[upstream, node] = _Node()
            if self.on_change is not None:
                self.on_change(node, True)
        return state

    def _report(
        self, upstream: Upstream, node: UpstreamNode, outcome: Outcome, check: ActiveCheck | PassiveCheck
    ) -> None:
        with self._lock:
            state = self._state(upstream, node)
            counts = state.counts
            if outcome is Outcome.SUCCESS:
                for kind in (Outcome.HTTP_FAILURE, Outcome.TCP_FAILURE, Outcome.TIMEOUT):
                    counts[kind] = 0
            else:
                counts[Outcome.SUCCESS] = 0
            counts[outcome] += 1
            threshold = _threshold(check, outcome)
            flips = (outcome is Outcome.SUCCESS) != state.healthy
            if not flips or threshold == 0 or counts[outcome] < threshold:
                return
            state.healthy = outcome is Outcome.SUCCESS
            for kind in Outcome:
                counts[kind] = 0
            down = set(self._down.get(upstream, _NONE))
            if state.healthy:
                down.discard(node)
            else:
                down.add(node)
            self._down[upstream] = frozenset(down)
            every = len(down) == len(upstream.nodes)
            if self.on_change is not None:
                self.on_change(node, state.healthy)
        plural = _PLURAL[outcome] if threshold > 1 else outcome.value
        if state.healthy:
            logger.info(
                "upstream node %s is healthy again (%d %s in a row)", node.authority, threshold, plural
            )
        else:
            logger.warning(
                "upstream node %s is unhealthy (%d %s in a row)%s",
                node.authority,
                threshold,
                plural,
                ": every node of its upstream is" if every else "",
            )


def probe_request(upstream: Upstream, active: ActiveCheck, node: UpstreamNode) -> bytes:
    """The bytes of one HTTP probe: ``GET http_path`` with the Host the upstream would get, no keep-alive."""
    host = (
        upstream.upstream_host
        if upstream.pass_host == "rewrite" and upstream.upstream_host  # noqa: S105 - not a password
        else node.authority
    )
    return (
        f"GET {active.http_path} HTTP/1.1\r\nHost: {host}\r\n"
        "User-Agent: consumer-auth-health-check\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")


def probe_status(active: ActiveCheck, status_line: bytes) -> Outcome | None:
    """What a probe's status line says (an unparsable line is an HTTP failure)."""
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return Outcome.HTTP_FAILURE
    status = int(parts[1])
    if status in active.healthy_statuses:
        return Outcome.SUCCESS
    if status in active.unhealthy_statuses:
        return Outcome.HTTP_FAILURE
    return None
