"""Which node of an upstream to try first, and which next when a connection cannot be made."""

from __future__ import annotations

import itertools
import math
import threading
from functools import reduce

from consumer_auth.sansio.upstream import Upstream, UpstreamNode

__all__ = ["Balancer", "Balancers"]

_MAX_SCHEDULE = 4096


def _schedule(weights: list[int]) -> tuple[int, ...]:
    """Smooth weighted round robin (nginx's): weights 5, 1, 1 give a, a, b, a, c, a, a — spread out."""
    divisor = reduce(math.gcd, (w for w in weights if w > 0))
    weights = [w // divisor for w in weights]
    total = sum(weights)
    if total > _MAX_SCHEDULE:  # keep the table small; the proportions stay within 1/4096
        weights = [max(1, w * _MAX_SCHEDULE // total) if w > 0 else 0 for w in weights]
        total = sum(weights)
    current = [0] * len(weights)
    order: list[int] = []
    for _ in range(total):
        for index, weight in enumerate(weights):
            current[index] += weight
        best = max(range(len(weights)), key=lambda i: (current[i], -i))
        current[best] -= total
        order.append(best)
    return tuple(order)


class Balancer:
    """Spreads requests over an upstream's nodes in proportion to their weights.

    :meth:`order` gives the node to try first (weighted round robin) followed by every other node of
    positive weight, in configuration order: the ones to retry on when a connection cannot be made.
    Nodes of weight 0 are never used. Safe to share between threads.
    """

    __slots__ = ("_counter", "_nodes", "_orders")

    def __init__(self, upstream: Upstream, down: frozenset[UpstreamNode] = frozenset()) -> None:
        nodes = tuple(node for node in upstream.nodes if node.weight > 0 and node not in down)
        self._nodes = nodes
        if not nodes:
            self._orders: tuple[tuple[UpstreamNode, ...], ...] = ((),)
            self._counter = itertools.count()
            return
        schedule = _schedule([node.weight for node in nodes])
        # One precomputed try-order per schedule slot: picking is then one counter step and a lookup.
        self._orders = tuple(
            (nodes[first], *(node for index, node in enumerate(nodes) if index != first))
            for first in schedule
        )
        self._counter = itertools.count()

    def order(self) -> tuple[UpstreamNode, ...]:
        """The nodes to try for one request, first choice first."""
        return self._orders[next(self._counter) % len(self._orders)]


class Balancers:
    """One :class:`Balancer` per upstream, made on first use (upstreams are immutable values), and one
    per set of unhealthy nodes of an upstream with health checks: traffic is spread over the healthy
    nodes by their weights."""

    __slots__ = ("_by_id", "_by_upstream", "_lock", "_without")

    def __init__(self) -> None:
        self._by_upstream: dict[Upstream, Balancer] = {}
        # The same upstream object comes back on every request of a route: found by identity, it costs
        # no hash (an Upstream's hash walks every field, its nodes and their fields included).
        self._by_id: dict[int, tuple[Upstream, Balancer]] = {}
        self._without: dict[tuple[Upstream, frozenset[UpstreamNode]], Balancer] = {}
        self._lock = threading.Lock()

    def order(
        self, upstream: Upstream, down: frozenset[UpstreamNode] = frozenset()
    ) -> tuple[UpstreamNode, ...]:
        """The nodes to try for one request to ``upstream``, none of ``down`` (empty: every node is down)."""
        if down:
            return self._order_without(upstream, down)
        known = self._by_id.get(id(upstream))
        if known is not None and known[0] is upstream:
            return known[1].order()
        with self._lock:
            balancer = self._by_upstream.setdefault(upstream, Balancer(upstream))
            if len(self._by_id) > 1024:  # upstream objects replaced at run time
                self._by_id.clear()
            self._by_id[id(upstream)] = (upstream, balancer)  # held: its id is not reused meanwhile
        return balancer.order()

    def _order_without(self, upstream: Upstream, down: frozenset[UpstreamNode]) -> tuple[UpstreamNode, ...]:
        key = (upstream, down)
        balancer = self._without.get(key)
        if balancer is None:
            with self._lock:
                if len(self._without) > 1024:  # states of upstreams replaced at run time
                    self._without.clear()
                balancer = self._without.setdefault(key, Balancer(upstream, down))
        return balancer.order()
