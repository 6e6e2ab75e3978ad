"""The sans-IO gateway: consumers, services and routes compiled once; request facts in, a decision out.

This module is long because deciding includes SPEC §8's other readings of a path (400, 404, lenient and
mounted matches) beside construction and run-time replacement; the plugins run in ``pipeline.py``.

Routing finds the route; the route's compiled pipeline (:mod:`consumer_auth.sansio.pipeline`) runs its
plugins; nothing here names a plugin. The WSGI and ASGI adapters and both proxies call :meth:`decide`
the same way, which is how every mode gives the same answers. This module imports no adapter, proxy,
store, server or CLI: the public :class:`consumer_auth.Gateway` adds those conveniences on top.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from consumer_auth.errors import ConfigError
from consumer_auth.sansio._trust import TrustedProxies
from consumer_auth.sansio.consumers import Consumer, ConsumerGroup, ConsumerIndex
from consumer_auth.sansio.counters import Counters, RedisFactory
from consumer_auth.sansio.decision import Allow, Decision, Pending, Reject, RequestFacts, json_reject
from consumer_auth.sansio.failures import FailureStore, MemoryFailureStore
from consumer_auth.sansio.passwords import VerificationCache
from consumer_auth.sansio.routing import (
    CompiledRoute,
    OtherReadings,
    PathMatching,
    Route,
    RouteIndex,
    Service,
    compile_route,
    other_readings,
    routes_by_service,
)

from ._paths import ODD_CHARACTER, examine
from .admission import BUSY, Admission, VerificationLimits
from .log import LOGGER, log_decision
from .pipeline import cached_allow, run_after_authentication, run_pipeline, run_quick_access
from .plugin import Environment, Plugin, PluginRequest, Profile, RehashHook
from .plugins.brute_force import client_subject

__all__ = ["BAD_REQUEST", "NOT_FOUND", "Gateway", "Guard", "check_consumers", "compile_routes"]

NOT_FOUND = json_reject(404, "error_msg", "404 Route Not Found", reason="no_route")
"""The answer when no route matches (in every mode, unless ``unmatched="pass"``)."""

BAD_REQUEST = json_reject(400, "error_msg", "400 Bad Request", reason="ambiguous_path")
"""The answer to a path servers may read differently from the route index (SPEC §8): a control
character, or a segment some server reads as ``.`` or ``..`` (``..;``, ``..\\``, ``%252e%252e``)."""
_AMBIGUOUS_HOST = json_reject(400, "error_msg", "400 Bad Request", reason="ambiguous_host")
"""More than one ``Host`` header (SPEC §8): the gateway and the app could each read another one."""


@dataclass(frozen=True, slots=True)
class _State:
    consumers: ConsumerIndex
    routes: RouteIndex
    readings: OtherReadings


def compile_routes(
    routes: Iterable[Route],
    services: Iterable[Service],
    environment: Environment | Profile,
    *,
    head_with_get: bool = False,
) -> RouteIndex:
    """Join routes with their services, compile their pipelines and index them (``head_with_get``: a GET
    route also takes HEAD).

    Raises:
        ConfigError: a duplicate service id, or a route's ``service_id`` naming no service.
    """
    by_id = routes_by_service(services)
    compiled = []
    for index, route in enumerate(routes):
        if not isinstance(route, Route):
            raise ConfigError(f"routes[{index}]", "expected a Route")
        service = None
        if route.service_id is not None:
            service = by_id.get(route.service_id)
            if service is None:
                raise ConfigError(f"routes[{index}].service_id", f"no service with id {route.service_id!r}")
        compiled.append(compile_route(route, service, index, environment, head_with_get=head_with_get))
    return RouteIndex(compiled)


def check_consumers(routes: RouteIndex, consumers: ConsumerIndex) -> None:
    """Let every plugin check the consumers it names, such as ``anonymous_consumer`` (files, Python and
    stores alike).

    Raises:
        ConfigError: placed where the plugin was written (``routes[i].plugins.basic-auth...`` or the
            service's).
    """
    for route in routes.routes:
        for name, plugin in route.plugins.items():
            try:
                plugin.check_consumers(consumers)
            except ConfigError as error:
                own = any(p is plugin for p in route.route.plugins)
                where = (
                    f"routes[{route.order}]"
                    if own or route.service is None
                    else f"service {route.service.id!r}"
                )
                raise error.within(f"{where}.plugins.{name}") from None


def _consumer_index(consumers: Iterable[Consumer], groups: Iterable[ConsumerGroup] = ()) -> ConsumerIndex:
    """Index the consumers and their groups; their plugins must be :class:`Plugin` objects
    (``Consumer`` and ``ConsumerGroup`` check only their shape)."""
    index = ConsumerIndex(consumers, groups)
    for position, group in enumerate(index.groups):
        for place, plugin in enumerate(group.plugins):
            if not isinstance(plugin, Plugin):
                raise ConfigError(
                    f"consumer_groups[{position}].plugins[{place}]",
                    f"expected a plugin object, got {plugin!r}",
                )
    for position, consumer in enumerate(index):
        for place, plugin in enumerate(consumer.plugins):
            if not isinstance(plugin, Plugin):
                raise ConfigError(
                    f"consumers[{position}].plugins[{place}]", f"expected a plugin object, got {plugin!r}"
                )
    return index


class Gateway:
    """Consumers, services and routes, compiled once; decides what happens to each request (sans-IO).

    The arguments are those of :class:`consumer_auth.Gateway`, which adds configuration files, stores and
    the adapters to this class.

    Raises:
        ConfigError: naming the exact place of a mistake (a dangling ``service_id`` or ``anonymous_consumer``,
            a duplicate credential username, ...).
    """

    def __init__(
        self,
        *,
        consumers: Iterable[Consumer] = (),
        routes: Iterable[Route] = (),
        services: Iterable[Service] = (),
        consumer_groups: Iterable[ConsumerGroup] = (),
        profile: Profile | str = Profile.CLASSIC,
        unmatched: str = "reject",
        cache_size: int = 10_000,
        cache_ttl: float = 60.0,
        on_rehash: RehashHook | None = None,
        trusted_proxies: Iterable[str] = (),
        brute_force_store: FailureStore | None = None,
        verification_limits: VerificationLimits | Mapping[str, Any] | None = None,
        path_matching: PathMatching | Mapping[str, Any] | None = None,
    ) -> None:
        try:
            self.profile = Profile(profile)
        except ValueError:
            raise ConfigError("profile", f"expected 'classic' or 'apisix-3', got {profile!r}") from None
        if unmatched not in ("reject", "pass"):
            raise ConfigError("unmatched", f"expected 'reject' or 'pass', got {unmatched!r}")
        self.unmatched = unmatched
        try:
            self.path_matching = PathMatching.from_config(path_matching or {})
        except ConfigError as error:
            raise error.within("path_matching") from None
        try:
            self.verification_cache = VerificationCache(cache_size, cache_ttl)
        except ConfigError as error:
            raise ConfigError(
                "verification_cache." + ("max_entries" if error.path == "max_entries" else "ttl"),
                error.reason,
            ) from None
        self.trusted_proxies = TrustedProxies(trusted_proxies)
        try:
            self.verification_limits = VerificationLimits.from_config(verification_limits or {})
        except ConfigError as error:
            raise error.within("verification") from None
        self._admission = Admission(self.verification_limits)
        self.environment = Environment(
            self.profile,
            self.verification_cache,
            on_rehash,
            brute_force_store if brute_force_store is not None else MemoryFailureStore(),
            self.client_address,
            Counters(redis=self._redis_counters()),
        )
        """What the plugins are compiled with (see :class:`~consumer_auth.sansio.plugin.Environment`)."""
        self._pass = Allow(None)
        self._lock = threading.Lock()
        self._services = tuple(services)
        self._routes = tuple(routes)
        state = _State(
            _consumer_index(consumers, consumer_groups), *self._compile(self._routes, self._services)
        )
        check_consumers(state.routes, state.consumers)
        self._state = state

    def _redis_counters(self) -> RedisFactory | None:
        """What makes the Redis counters of ``limit-count`` plugins with ``policy: redis``: none in the
        sans-IO core; :class:`consumer_auth.Gateway` gives :class:`~consumer_auth.counters.RedisCounter`."""
        return None

    @property
    def brute_force_store(self) -> FailureStore:
        """Where brute-force failure counts live (settable: every route uses the new store at once)."""
        store = self.environment.failure_store
        assert store is not None  # noqa: S101 - always set by __init__
        return store

    @brute_force_store.setter
    def brute_force_store(self, store: FailureStore) -> None:
        self.environment.failure_store = store

    @property
    def on_rehash(self) -> RehashHook | None:
        """The rehash hook (settable), see :class:`consumer_auth.Gateway`."""
        return self.environment.on_rehash

    @on_rehash.setter
    def on_rehash(self, hook: RehashHook | None) -> None:
        self.environment.on_rehash = hook

    def _compile(
        self, routes: tuple[Route, ...], services: tuple[Service, ...]
    ) -> tuple[RouteIndex, OtherReadings]:
        passing = self.unmatched == "pass"
        index = compile_routes(routes, services, self.environment, head_with_get=passing)
        readings = other_readings(
            index, mounted=passing, case_insensitive=self.path_matching.case_insensitive
        )
        return index, readings

    # -- run-time changes -----------------------------------------------------------------------------

    def replace(
        self,
        *,
        consumers: Iterable[Consumer] | None = None,
        routes: Iterable[Route] | None = None,
        services: Iterable[Service] | None = None,
        consumer_groups: Iterable[ConsumerGroup] | None = None,
    ) -> None:
        """Swap in new consumers, consumer groups, routes and services (any of them), in one atomic step.

        Requests in flight finish with what they started with; the next request sees the new set.
        Whatever is not given stays as it is (giving ``routes`` without ``services`` keeps the
        services, and the other way round; ``consumers`` without ``consumer_groups`` keeps the
        groups). A route's ``anonymous_consumer`` that no longer exists then answers 401
        ``Invalid user authorization``.

        Raises:
            ConfigError: what was given is invalid (everything in force stays as it was), such as a
                consumer's ``group_id`` naming no group.
        """
        new_routes = tuple(routes) if routes is not None else None
        new_services = tuple(services) if services is not None else None
        new_groups = tuple(consumer_groups) if consumer_groups is not None else None
        with self._lock:
            state = self._state
            index = None
            if consumers is not None or new_groups is not None:
                index = _consumer_index(
                    state.consumers if consumers is None else consumers,
                    state.consumers.groups if new_groups is None else new_groups,
                )
            compiled, readings = state.routes, state.readings
            if new_routes is not None or new_services is not None:
                new_routes = self._routes if new_routes is None else new_routes
                new_services = self._services if new_services is None else new_services
                compiled, readings = self._compile(new_routes, new_services)
                self._routes, self._services = new_routes, new_services
            self._state = _State(index if index is not None else state.consumers, compiled, readings)

    def replace_consumers(self, consumers: Iterable[Consumer]) -> None:
        """Swap in a new set of consumers atomically; requests in flight finish with the old set.

        A route's ``anonymous_consumer`` that no longer exists then answers 401
        ``Invalid user authorization``.

        Raises:
            ConfigError: the new set is invalid (the current set stays in force).
        """
        self.replace(consumers=consumers)

    def replace_routes(self, routes: Iterable[Route], services: Iterable[Service] = ()) -> None:
        """Swap in new routes and services atomically.

        Raises:
            ConfigError: they are invalid (the current ones stay in force).
        """
        self.replace(routes=routes, services=services)

    @property
    def consumers(self) -> tuple[Consumer, ...]:
        """The consumers in force now."""
        return tuple(self._state.consumers)

    @property
    def consumer_groups(self) -> tuple[ConsumerGroup, ...]:
        """The consumer groups in force now."""
        return self._state.consumers.groups

    @property
    def routes(self) -> tuple[Route, ...]:
        """The routes in force now."""
        return self._routes

    @property
    def services(self) -> tuple[Service, ...]:
        """The services in force now."""
        return self._services

    @property
    def compiled_routes(self) -> tuple[CompiledRoute, ...]:
        """The routes in force now, each joined with its service (effective upstream, prefix, plugins)."""
        return self._state.routes.routes

    # -- deciding ---------------------------------------------------------------------------------

    def match(self, facts: RequestFacts) -> CompiledRoute | None:
        """The route a request matches, if any."""
        return self._state.routes.match(facts.method, facts.path, facts.host)

    def client_address(self, facts: RequestFacts) -> str | None:
        """The address a request comes from, as brute-force limits and logs see it.

        It is the peer (``facts.client``), unless the peer is one of ``trusted_proxies``: then
        ``X-Forwarded-For`` is read from the right, and the first address that is not a trusted proxy
        is the client. A client can therefore never choose its own address by sending the header.
        """
        return self.trusted_proxies.client(facts.client, facts.forwarded_for)

    def decide(self, facts: RequestFacts) -> Decision | Pending:
        """Decide a request; a :class:`Pending` result still needs a slow step run (``run()``).

        More than one ``Host`` header is answered 400 first, then a path that servers may read
        differently from the route index (a control character, a segment such as ``..;`` or ``..\\``),
        in every mode (SPEC §8).

        Everything cheap happens here: routing, parsing the header, finding the credential, and checking
        a clear or ``{SHA}`` password or a success the verification cache remembers. Only a slow hash
        (argon2, bcrypt, APR1) that must really run comes back as ``Pending`` (with ``slow`` true), so an
        event loop can run it elsewhere; ``Pending.login`` says whose it is.

        On a route with ``brute_force`` limits, every attempt with credentials is a ``Pending``: its
        ``run()`` first asks the failure store whether the username or the client is locked out (429,
        without checking the password), then checks the password and counts a failure. It is ``slow``
        when the check may run a slow hash or the store talks to a server.

        A slow ``Pending`` is admitted under ``verification_limits`` first: over a bound, the answer is
        the 503 :data:`~consumer_auth.sansio.admission.BUSY` at once.
        """
        log = LOGGER.isEnabledFor(logging.INFO)
        host = facts.host
        if host is not None and "," in host:
            # More than one Host header (WSGI servers join them with commas; the ASGI adapter does the
            # same): the gateway and the app could each read a different one.
            if log:
                log_decision(None, _AMBIGUOUS_HOST, self.client_address(facts))
            return _AMBIGUOUS_HOST
        state = self._state
        found: CompiledRoute | Reject | None
        path = facts.path
        # _paths.plain(path), inlined: the usual path has no other reading (SPEC §8).
        if ODD_CHARACTER(path) is None and "./" not in path and path[-1:] != ".":
            found = state.routes.match(facts.method, path, facts.host)
            if found is not None and (found.guarded or state.readings.folded is None):
                return self._decide_route(found, state, facts, log)
            found = self._read_otherwise(state, facts, found, None)
        else:
            refuse, other = examine(facts.path)
            if refuse:
                found = BAD_REQUEST
            else:
                found = state.routes.match(facts.method, facts.path, facts.host)
                if found is None or (
                    not found.guarded and (other is not None or state.readings.folded is not None)
                ):
                    found = self._read_otherwise(state, facts, found, other)
        if not isinstance(found, CompiledRoute):
            decision: Decision = found if found is not None else self._pass
            if log:
                log_decision(None, decision, self.client_address(facts))
            return decision
        return self._decide_route(found, state, facts, log)

    def _decide_route(
        self, route: CompiledRoute, state: _State, facts: RequestFacts, log: bool
    ) -> Decision | Pending:
        """Run a matched route's pipeline: through its shortcut when it has one and the log is off."""
        pipeline = route.pipeline
        shortcut = pipeline.shortcut
        request = None
        if shortcut is not None and not log:
            found = shortcut(facts, state.consumers)
            if found is not None:
                if isinstance(found, Reject):
                    return found
                consumer = found[0]
                if not consumer.plugins and not state.consumers.group_plugins(consumer):
                    if pipeline.authenticates_only:
                        return cached_allow(route, pipeline, found)
                    quick = pipeline.quick_access
                    if quick is not None:
                        return run_quick_access(route, pipeline, quick, facts, found)
                request = PluginRequest(
                    facts, state.consumers, self.environment, route.label, route.service_id, log
                )
                request.consumer, request.credential, request.hide_credentials = found
        if request is not None:
            decided = run_after_authentication(route, pipeline, request)
        else:
            request = PluginRequest(
                facts, state.consumers, self.environment, route.label, route.service_id, log
            )
            decided = run_pipeline(route, pipeline, request)
        if isinstance(decided, Pending) and decided.slow:
            return self._admit(decided, self.client_address(facts), route, log)
        return decided

    def _admit(
        self, pending: Pending, client: str | None, route: CompiledRoute, log: bool
    ) -> Pending | Reject:
        """``pending`` if its client (and the gateway) may have one more slow verification pending,
        else the 503 :data:`~consumer_auth.sansio.admission.BUSY` at once."""
        subject = client_subject(client) if client is not None else None
        ticket = self._admission.enter(subject, pending.login)
        if ticket is None:
            if log:
                log_decision(route, BUSY, client)
            return BUSY
        run = pending.run

        def admitted() -> Decision:
            try:
                return run()
            finally:
                ticket.release()

        return Pending(True, admitted, pending.login)

    def _read_otherwise(
        self, state: _State, facts: RequestFacts, matched: CompiledRoute | None, other: str | None
    ) -> CompiledRoute | Reject | None:
        """The route deciding a request that matched no route, or only one without plugins (SPEC §8).

        Unmatched under ``unmatched: pass``: a path some route has (its host or method differing) is
        404; then the lenient reading, the path below a stripped service prefix and (with
        ``case_insensitive``) the lower-cased path are tried, in that order; the first that matches a
        route decides; one that matches a route's path only is 404. Matched by a route without plugins:
        a guarded route matching another reading decides instead. ``None``: pass the request on.
        """
        method, host, path = facts.method, facts.host, facts.path
        unmatched = matched is None
        if unmatched:
            if self.unmatched != "pass":
                return NOT_FOUND
            if state.routes.match(method, path, host, any_method_or_host=True) is not None:
                return NOT_FOUND
        readings = state.readings
        tries: list[tuple[RouteIndex, str]] = []
        if other is not None:
            tries.append((readings.plain, other))
        if unmatched and readings.mounted is not None:
            tries.append((readings.mounted, path))
            if other is not None:
                tries.append((readings.mounted, other))
        if readings.folded is not None:
            tries.append((readings.folded, (other or path).lower()))
        for index, reading in tries:
            if index.match(method, reading, host, any_method_or_host=True) is None:
                continue  # no route has this path (the usual case: one lookup)
            route = index.match(method, reading, host)
            if route is None:
                if unmatched:
                    return NOT_FOUND  # its path is a route's, its host or method is not
            elif unmatched or route.guarded:
                return route
        return matched

    def decide_now(self, facts: RequestFacts) -> Decision:
        """Decide a request, verifying any password in the calling thread."""
        decision = self.decide(facts)
        return decision.run() if isinstance(decision, Pending) else decision

    def guard(self, *plugins: Plugin) -> Guard:
        """Compile plugins into a :class:`Guard` for one part of an app, such as a view.

        The guard decides with this gateway's profile and the consumers in force at each request; the
        framework integrations build their per-view protection on it.

        Raises:
            ConfigError: a plugin is invalid or duplicated, or ``anonymous_consumer`` names no consumer.

        Example:
            >>> from consumer_auth import BasicAuthPlugin, ConsumerRestrictionPlugin
            >>> gateway = Gateway(consumers=[Consumer("alex", password="123456")])
            >>> guard = gateway.guard(BasicAuthPlugin(), ConsumerRestrictionPlugin(whitelist=["alex"]))
            >>> guard.decide_now(RequestFacts("GET", "/")).status
            401
        """
        compiled, _ = compile_route(Route("/*", plugins=plugins), None, -1, self.environment)
        for name, plugin in compiled.plugins.items():
            try:
                plugin.check_consumers(self._state.consumers)
            except ConfigError as error:
                raise error.within(name) from None
        return Guard(self, compiled)


class Guard:
    """Plugins guarding one part of an app (a view, a dependency), decided like a matched route.

    Made by :meth:`Gateway.guard`. Its answers are the gateway's: the same 401 messages for the same
    profile, the same ``consumer-restriction`` rejections.
    """

    __slots__ = ("_gateway", "_route")

    def __init__(self, gateway: Gateway, route: CompiledRoute) -> None:
        self._gateway = gateway
        self._route = route

    def decide(self, facts: RequestFacts, consumer: Consumer | None = None) -> Decision | Pending:
        """Decide a request that reached the app; a :class:`Pending` result still needs ``run()``.

        Args:
            facts: The request.
            consumer: The consumer the request was already authenticated as (by a gateway route), if any.
                Then only the ``access`` phase runs (``consumer-restriction``): the request is not
                authenticated again, so a route's ``hide_credentials`` does not get in the way.
        """
        gateway = self._gateway
        route = self._route
        log = LOGGER.isEnabledFor(logging.INFO)
        request = PluginRequest(facts, gateway._state.consumers, gateway.environment, route.label, None, log)
        if consumer is None or not consumer.is_authenticated:  # an anonymous consumer counts as none
            decided = run_pipeline(route, route.pipeline, request)
            if isinstance(decided, Pending) and decided.slow:
                return gateway._admit(decided, gateway.client_address(facts), route, log)
            return decided
        request.consumer = consumer
        return run_pipeline(route, route.pipeline, request, authenticated=True)

    def decide_now(self, facts: RequestFacts, consumer: Consumer | None = None) -> Decision:
        """Like :meth:`decide`, verifying any password in the calling thread."""
        decision = self.decide(facts, consumer)
        return decision.run() if isinstance(decision, Pending) else decision
