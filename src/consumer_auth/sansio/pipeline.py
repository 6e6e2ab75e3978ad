"""A route's plugins compiled into one ordered pipeline, and the run of it on a request.

Built once per route when the gateway loads (and once per route and consumer that carries plugins of
its own). Where plugins come from, lowest first: the route's service, the route, the consumer's group,
the consumer (SPEC §9): a plugin of a name replaces the one of the same name from a lower level,
wholesale. The compiled plugins are sorted by priority (higher first, then as configured) and split by
phase, so a request walks tuples of bound methods::

    request facts ─▶ rewrite ─▶ authenticate ─▶ (consumer's plugins merged in) ─▶ access ─▶ response ─▶ Allow
                        │            │                                              │
                        └────────────┴──────────── Reject (answered now) ◀──────────┘

A phase returning :class:`~consumer_auth.sansio.plugin.Suspend` turns the rest of the run into a
:class:`~consumer_auth.Pending` that an adapter finishes off its event loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from consumer_auth.sansio.decision import Allow, Decision, MatchedRoute, Pending, Reject

from .log import log_decision
from .plugin import Environment, Plugin, PluginRequest, QuickAccess, QuickHeaders, Suspend

if TYPE_CHECKING:
    from consumer_auth.sansio.consumers import BasicAuthCredential, Consumer, ConsumerPlugin
    from consumer_auth.sansio.decision import RequestFacts

__all__ = [
    "Pipeline",
    "cached_allow",
    "effective_plugins",
    "run_after_authentication",
    "run_pipeline",
    "run_quick_access",
]

_CONSUMER_CACHE_LIMIT = 4096


def effective_plugins(*levels: Iterable[Plugin]) -> dict[str, Plugin]:
    """The plugins in force, by name, from levels given lowest first (service, route, group, consumer):
    a plugin replaces the one of the same name from a lower level wholesale."""
    merged: dict[str, Plugin] = {}
    for level in levels:
        for plugin in level:
            merged[plugin.name] = plugin
    return merged


class Pipeline:
    """The compiled plugins of one route (or guard), sorted by priority and split into phases.

    Attributes:
        plugins: The compiled plugins in the order they run (priority, higher first).
        before: The ``rewrite`` then ``authenticate`` methods, in order.
        shortcut: The authenticating plugin's :meth:`~consumer_auth.Plugin.shortcut`, when it is the only
            plugin before authentication and has one.
        authenticates_only: The pipeline is that plugin alone: a shortcut's result is the whole decision.
        access: The ``access`` methods, in order.
        quick_access: Every ``access`` plugin's :meth:`~consumer_auth.Plugin.quick_access`, in order, when
            they all have one and no plugin has a ``response`` phase (else ``None``).
        response: The ``response`` methods, in order.
    """

    __slots__ = (
        "_allows",
        "_by_consumer",
        "_compiled",
        "_environment",
        "_last_allow",
        "access",
        "authenticates_only",
        "before",
        "plugins",
        "quick_access",
        "response",
        "shortcut",
    )

    def __init__(self, plugins: Mapping[str, Plugin], environment: Environment) -> None:
        self._environment = environment
        self._compiled = {name: plugin.compile(environment) for name, plugin in plugins.items()}
        self._by_consumer: dict[int, tuple[Consumer, Iterable[ConsumerPlugin], Pipeline]] = {}
        self._allows: dict[
            tuple[int, Consumer | None, BasicAuthCredential | None, bool], tuple[MatchedRoute, Allow]
        ] = {}
        self._last_allow: tuple[object, MatchedRoute, Allow] | None = None
        self._arrange(self._compiled)

    def _arrange(self, compiled: Mapping[str, Plugin]) -> None:
        ordered = sorted(compiled.values(), key=lambda plugin: -plugin.priority)  # stable: config order
        phases = [(plugin, plugin.phases()) for plugin in ordered]
        self.plugins = tuple(ordered)
        self.before = tuple(p.rewrite for p, ph in phases if "rewrite" in ph) + tuple(
            p.authenticate for p, ph in phases if "authenticate" in ph
        )
        self.access = tuple(p.access for p, ph in phases if "access" in ph)
        self.response = tuple(p.response for p, ph in phases if "response" in ph)
        # The common case compiled down: authentication is one plugin's authenticate phase (nothing runs
        # before it), and that plugin has a shortcut. Plugins after authentication still run.
        before = [(p, ph) for p, ph in phases if "rewrite" in ph or "authenticate" in ph]
        only = before[0] if len(before) == 1 and "rewrite" not in before[0][1] else None
        self.shortcut = only[0].shortcut() if only is not None else None
        self.authenticates_only = len(phases) == 1 and not self.access and not self.response
        quick = [p.quick_access() for p, ph in phases if "access" in ph]
        self.quick_access: tuple[QuickAccess, ...] | None = (
            tuple(q for q in quick if q is not None)
            if quick and None not in quick and not self.response
            else None
        )

    def for_consumer(self, consumer: Consumer, group: Iterable[ConsumerPlugin] = ()) -> Pipeline:
        """This pipeline with the plugins of a consumer's group, then of the consumer, merged in (SPEC §9:
        consumer > group > route > service), built once per consumer and group.

        Only the ``access`` and ``response`` phases of the result run: the consumer is known only after
        authentication. ``group`` is the plugins of the consumer's group
        (:meth:`ConsumerIndex.group_plugins <consumer_auth.sansio.consumers.ConsumerIndex.group_plugins>`),
        the same tuple for every request of that consumer while the group is in force: a replaced
        group (or consumer) builds a new pipeline.
        """
        if not consumer.plugins and not group:
            return self
        key = id(consumer)
        found = self._by_consumer.get(key)
        if found is not None and found[0] is consumer and found[1] is group:
            return found[2]
        from_group = [p for p in group if isinstance(p, Plugin)]  # all of them: checked at load
        own = [p for p in consumer.plugins if isinstance(p, Plugin)]
        levels = effective_plugins(from_group, own)
        merged = {**self._compiled, **{name: p.compile(self._environment) for name, p in levels.items()}}
        pipeline = Pipeline.__new__(Pipeline)
        pipeline._environment = self._environment
        pipeline._compiled = merged
        pipeline._by_consumer = {}
        pipeline._allows = {}
        pipeline._last_allow = None
        pipeline._arrange(merged)
        if len(self._by_consumer) >= _CONSUMER_CACHE_LIMIT:
            self._by_consumer.clear()  # bounded: replaced consumers do not accumulate
        self._by_consumer[key] = (consumer, group, pipeline)
        return pipeline


def run_pipeline(
    route: MatchedRoute, pipeline: Pipeline, request: PluginRequest, *, authenticated: bool = False
) -> Decision | Pending:
    """Run a route's pipeline on a request: a decision, or a :class:`~consumer_auth.Pending` to finish.

    ``authenticated``: the request already carries its consumer (a per-view guard behind a gateway
    route); only the ``access`` phase runs, and the ``Allow`` adds nothing to the request.
    """
    if not authenticated:
        steps = pipeline.before
        for index in range(len(steps)):
            out = steps[index](request)
            if out is not None:
                if isinstance(out, Suspend):
                    return _pending(route, pipeline, request, out, index + 1, before=True)
                return _reject(route, request, out)
    return _after(route, pipeline, request, 0, authenticated)


def run_after_authentication(
    route: MatchedRoute, pipeline: Pipeline, request: PluginRequest
) -> Decision | Pending:
    """Run the phases after authentication: the request already carries what the ``authenticate`` phase
    would have set (a :meth:`~consumer_auth.Plugin.shortcut` found it)."""
    return _after(route, pipeline, request, 0, False)


def run_quick_access(
    route: MatchedRoute,
    pipeline: Pipeline,
    steps: tuple[QuickAccess, ...],
    facts: RequestFacts,
    found: tuple[Consumer, BasicAuthCredential | None, bool],
) -> Decision:
    """Run the phases after authentication through the plugins' quick forms (see
    :meth:`~consumer_auth.Plugin.quick_access`): the request was authenticated by a shortcut as
    ``found``, its consumer brings no plugins, the log is off."""
    consumer = found[0]
    quick: QuickHeaders | None = None
    for step in steps:
        out = step(facts, consumer, route)
        if out is not None:
            if isinstance(out, Reject):
                return out
            quick = out if quick is None else (quick[0] + out[0], quick[1] + out[1])
    # The shortcut hands back the same tuple for a credential it remembers: the last one's Allow is
    # found by identity, without hashing the key (one attribute, replaced whole: safe across threads).
    last = pipeline._last_allow
    if last is not None and last[0] is found and last[1] is route:
        allow = last[2]
    else:
        allow = cached_allow(route, pipeline, found)
        pipeline._last_allow = (found, route, allow)
    return allow if quick is None else allow.with_response_headers(quick[0], quick[1])


def _after(
    route: MatchedRoute, pipeline: Pipeline, request: PluginRequest, start: int, authenticated: bool
) -> Decision | Pending:
    consumer = request.consumer
    if consumer is not None and (consumer.plugins or consumer.group_id is not None):
        pipeline = pipeline.for_consumer(consumer, request.consumers.group_plugins(consumer))
    steps = pipeline.access
    for index in range(start, len(steps)):
        out = steps[index](request)
        if out is not None:
            if isinstance(out, Suspend):
                return _pending(
                    route, pipeline, request, out, index + 1, before=False, authenticated=authenticated
                )
            return _reject(route, request, out)
    if authenticated:
        decision = Allow(route, consumer)
        if request.log:
            log_decision(
                route,
                decision,
                request.client,
                consumer=consumer.username if consumer else None,
                allowed="already_authenticated",
            )
        return decision
    for respond in pipeline.response:
        respond(request)
    decision = _allow(route, pipeline, request)
    if request.log:
        log_decision(route, decision, request.client, failure=request.failure)
    return decision


def _pending(
    route: MatchedRoute,
    pipeline: Pipeline,
    request: PluginRequest,
    suspended: Suspend,
    resume_at: int,
    *,
    before: bool,
    authenticated: bool = False,
) -> Pending:
    def run() -> Decision:
        out = suspended.run()
        if out is not None:
            return _reject(route, request, out)
        if before:
            steps = pipeline.before
            for index in range(resume_at, len(steps)):
                found = steps[index](request)
                if found is not None:
                    if isinstance(found, Suspend):
                        return _finish(_pending(route, pipeline, request, found, index + 1, before=True))
                    return _reject(route, request, found)
            return _finish(_after(route, pipeline, request, 0, authenticated))
        return _finish(_after(route, pipeline, request, resume_at, authenticated))

    return Pending(suspended.slow, run, suspended.login)


def _finish(decision: Decision | Pending) -> Decision:
    """Already off the event loop: a further suspension simply runs here."""
    return decision.run() if isinstance(decision, Pending) else decision


def _reject(route: MatchedRoute, request: PluginRequest, rejection: Reject) -> Reject:
    if request.log:
        consumer = request.consumer.username if request.consumer is not None else request.target
        log_decision(route, rejection, request.client, consumer=consumer, failure=request.failure)
    return rejection


_ALLOWS_LIMIT = 4096


def _allow(route: MatchedRoute, pipeline: Pipeline, request: PluginRequest) -> Allow:
    """The ``Allow`` of a request (see :func:`cached_allow`), unless the ``response`` phase added headers."""
    key = (request.consumer, request.credential, request.hide_credentials)
    allow = cached_allow(route, pipeline, key)
    if request.response_headers:
        return allow.with_response_headers(tuple(request.response_headers))
    return allow


def cached_allow(
    route: MatchedRoute,
    pipeline: Pipeline,
    key: tuple[Consumer | None, BasicAuthCredential | None, bool],
) -> Allow:
    """The ``Allow`` of a consumer, credential and ``hide_credentials`` on a route: immutable, so built
    once and reused while they are in force.

    Keyed by the objects themselves (consumers and credentials compare by identity), in the pipeline of
    the route: replaced routes and consumers take their entries with them.
    """
    allows = pipeline._allows
    entry = (id(route), *key)  # a route's variants (its other readings, SPEC §8) share its pipeline
    found = allows.get(entry)
    if found is not None and found[0] is route:
        return found[1]
    allow = _build_allow(route, *key, ())
    if len(allows) >= _ALLOWS_LIMIT:
        allows.clear()  # bounded: a long-running gateway's consumers come and go
    allows[entry] = (route, allow)
    return allow


def _build_allow(
    route: MatchedRoute,
    consumer: Consumer | None,
    credential: BasicAuthCredential | None,
    hide: bool,
    response_headers: tuple[tuple[str, str], ...],
) -> Allow:
    return Allow(
        route,
        consumer,
        credential,
        identity_headers(consumer, credential) if consumer is not None else (),
        hide_credentials=hide,
        strip_prefix=route.strip_prefix,
        response_headers=response_headers,
    )


def identity_headers(
    consumer: Consumer, credential: BasicAuthCredential | None
) -> tuple[tuple[str, str], ...]:
    """The identity headers of a consumer (and credential)."""
    headers = [("x-consumer-username", consumer.username)]
    if credential is not None and credential.id is not None:
        headers.append(("x-credential-identifier", credential.id))
    if consumer.custom_id is not None:
        headers.append(("x-consumer-custom-id", consumer.custom_id))
    return tuple(headers)
