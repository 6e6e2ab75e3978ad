"""The gateway: match a route, run its plugins, and say what to do with the request.

This module is the sans-IO heart of the library: request facts in (:class:`RequestFacts`), a
:class:`Decision` out. The WSGI and ASGI adapters and both proxies call it the same way, which is
how every mode gives the same answers.

Each decision is logged, when enabled, as one record on the ``consumer_auth.auth`` logger (level
INFO) with the attributes ``outcome``, ``reason``, ``status``, ``route``, ``consumer``, ``client``
and ``failure``; never a password, an ``Authorization`` value, a hash or a username a client typed
(see ``docs/security.md``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._paths import ODD_CHARACTER, examine
from ._trust import TrustedProxies
from ._verify import BUSY, Admission, VerificationLimits
from .config import GatewayConfig, load_file, parse_config
from .consumers import BasicAuthCredential, Consumer, ConsumerIndex
from .credentials import BasicCredentials
from .decision import Allow, Decision, Pending, Reject, RequestFacts, json_reject
from .errors import ConfigError
from .failures import LOGGER as BRUTE_FORCE_LOGGER
from .failures import FailureStore, MemoryFailureStore
from .passwords import VerificationCache
from .plugins import Plugin, Profile
from .plugins.basic_auth import Authenticated, BasicAuthCheck, RehashHook, SlowCheck
from .plugins.brute_force import BruteForceCheck, client_subject
from .routing import (
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

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from .asgi import ASGIApp, ASGIGatewayMiddleware
    from .proxy.asgi import ASGIProxy
    from .proxy.wsgi import WSGIProxy
    from .store import Store, StoreWatcher
    from .upstream import Upstream
    from .wsgi import GatewayMiddleware

__all__ = ["BAD_REQUEST", "LOGGER", "NOT_FOUND", "Gateway", "Guard", "check_anonymous", "compile_routes"]

LOGGER = logging.getLogger("consumer_auth.auth")
"""One INFO record per decision (see the module docstring for its attributes)."""

NOT_FOUND = json_reject(404, "error_msg", "404 Route Not Found", reason="no_route")
"""The answer when no route matches (in every mode, unless ``unmatched="pass"``)."""

BAD_REQUEST = json_reject(400, "error_msg", "400 Bad Request", reason="ambiguous_path")
"""The answer to a path servers may read differently from the route index (SPEC §8): a control
character, or a segment some server reads as ``.`` or ``..`` (``..;``, ``..\\``, ``%252e%252e``).
The proxies give the same bytes to a ``Connection`` header naming a framing header."""
_AMBIGUOUS_HOST = json_reject(400, "error_msg", "400 Bad Request", reason="ambiguous_host")
"""More than one ``Host`` header (SPEC §8): the gateway and the app could each read another one."""


@dataclass(frozen=True, slots=True)
class _State:
    consumers: ConsumerIndex
    routes: RouteIndex
    readings: OtherReadings


def compile_routes(
    routes: Iterable[Route], services: Iterable[Service], profile: Profile, *, head_with_get: bool = False
) -> RouteIndex:
    """Join routes with their services and index them (``head_with_get``: a GET route also takes HEAD).

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
        compiled.append(compile_route(route, service, index, profile, head_with_get=head_with_get))
    return RouteIndex(compiled)


def check_anonymous(routes: RouteIndex, consumers: ConsumerIndex) -> None:
    """Refuse a route whose ``anonymous_consumer`` names no consumer (files, Python and stores alike).

    Raises:
        ConfigError: at ``routes[i].plugins.basic-auth.anonymous_consumer`` (or the service's).
    """
    for route in routes.routes:
        name = route.auth.anonymous_consumer if route.auth is not None else None
        if name is not None and consumers.consumer(name) is None:
            own = any(p.name == "basic-auth" for p in route.route.plugins)
            where = (
                f"routes[{route.order}]" if own or route.service is None else f"service {route.service.id!r}"
            )
            raise ConfigError(f"{where}.plugins.basic-auth.anonymous_consumer", f"no consumer named {name!r}")


class Gateway:
    """Consumers, services and routes, compiled once; decides what happens to each request.

    Args:
        consumers: The API clients and their credentials.
        routes: The routes to guard (``Route`` objects).
        services: The services routes may belong to.
        profile: ``"classic"`` (the default: APISIX 2.x / API7 Cloud guide messages, which reveal whether a
            username exists) or ``"apisix-3"`` (one message for every credential failure, revealing nothing).
        unmatched: ``"reject"`` (the default) answers 404 ``Route Not Found`` to requests no route matches;
            ``"pass"`` hands them to the app unauthenticated (in-process modes, or the proxies' default
            upstream). A path some route has, with another host or method, is still 404; the lenient
            reading of a path, and a guarded route's path below a stripped service prefix, are matched
            too (SPEC §8, ``docs/security.md``).
        cache_size: How many recent successful slow-hash verifications to remember (``0``: none); see
            :class:`~consumer_auth.passwords.VerificationCache` and ``docs/passwords.md``.
        cache_ttl: Seconds a remembered success stays valid.
        on_rehash: ``on_rehash(consumer, credential, new_hash)`` is called after the first successful
            verification of a credential whose stored form is outdated (clear, ``{SHA}``, ``$apr1$``,
            bcrypt, or argon2 with weaker parameters), with a fresh argon2id hash of that password, so a
            store can save it. Called once per credential per consumer set, off the event loop;
            exceptions it raises are logged, never sent to the client.
        trusted_proxies: Addresses or CIDR networks of proxies in front of the gateway. Only a request
            from one of them has its ``X-Forwarded-For`` read to find the client address (which
            brute-force limits and logs use); see :meth:`client_address`.
        brute_force_store: Where the failure counts of routes with ``brute_force`` limits live: a
            :class:`~consumer_auth.failures.MemoryFailureStore` (the default, one per gateway) or a
            :class:`~consumer_auth.failures.RedisFailureStore` shared by several processes.
        path_matching: A :class:`~consumer_auth.routing.PathMatching` or its mapping
            (``{"case_insensitive": True}``: also match guarded routes case-insensitively).

    Raises:
        ConfigError: naming the exact place of a mistake (a dangling ``service_id`` or ``anonymous_consumer``,
            a duplicate credential username, ...).

    Example:
        >>> from consumer_auth import BasicAuthPlugin, Consumer, Gateway, Route
        >>> gateway = Gateway(
        ...     consumers=[Consumer("alex", password="123456")],
        ...     routes=[Route("/json", methods=["GET"], plugins=[BasicAuthPlugin()])],
        ... )
        >>> gateway.decide_now(RequestFacts("GET", "/json")).status
        401
    """

    def __init__(
        self,
        *,
        consumers: Iterable[Consumer] = (),
        routes: Iterable[Route] = (),
        services: Iterable[Service] = (),
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
        self.on_rehash = on_rehash
        self.trusted_proxies = TrustedProxies(trusted_proxies)
        self.brute_force_store: FailureStore = (
            brute_force_store if brute_force_store is not None else MemoryFailureStore()
        )
        try:
            self.verification_limits = VerificationLimits.from_config(verification_limits or {})
        except ConfigError as error:
            raise error.within("verification") from None
        self._admission = Admission(self.verification_limits)
        self._pass = Allow(None)
        self._lock = threading.Lock()
        self._services = tuple(services)
        self._routes = tuple(routes)
        routes_index, readings = self._compile(self._routes, self._services)
        state = _State(ConsumerIndex(consumers), routes_index, readings)
        check_anonymous(state.routes, state.consumers)
        self._state = state
        self._watcher: StoreWatcher | None = None

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls, config: GatewayConfig, *, store: Store | str | None = None, poll_interval: float | None = None
    ) -> Gateway:
        """Build a gateway from an already validated :class:`~consumer_auth.config.GatewayConfig`.

        With ``store``, the consumers come from the store and are kept current (see :meth:`attach`);
        the configuration then holds routes, services and settings only.

        Raises:
            ConfigError: the configuration has consumers as well as a store, or (with the store's
                consumers) breaks a rule such as an ``anonymous_consumer`` naming no consumer.
            StoreError: the store cannot be read.
        """
        options: dict[str, Any] = {
            "routes": config.routes,
            "services": config.services,
            "profile": config.profile,
            "unmatched": config.unmatched,
            "cache_size": config.cache_size,
            "cache_ttl": config.cache_ttl,
            "trusted_proxies": config.trusted_proxies,
            "brute_force_store": config.brute_force_store,
            "verification_limits": config.verification_limits,
            "path_matching": config.path_matching,
        }
        if store is None:
            return cls(consumers=config.consumers, **options)
        if config.consumers:
            raise ConfigError(
                "consumers", "the consumers come from the store: remove them from the configuration"
            )
        return cls._following(store, options, routes=False, poll_interval=poll_interval)

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any]) -> Gateway:
        """Build a gateway from a configuration mapping (SPEC §6 schema).

        Raises:
            ConfigError: naming the place, e.g.
                ``routes[0].plugins.basic-auth.hide_credentials: expected a boolean, got 'yes'``.
        """
        return cls.from_config(parse_config(mapping))

    @classmethod
    def from_file(
        cls, path: str | Path, *, store: Store | str | None = None, poll_interval: float | None = None
    ) -> Gateway:
        """Build a gateway from a YAML, JSON or TOML file (chosen by its extension).

        With ``store``, the file holds routes, services and settings, and the consumers come from the
        store, kept current: ``Gateway.from_file("routes.yaml", store="sqlite:///consumers.db")``.

        Raises:
            ConfigError: the file cannot be read or parsed, or its content is invalid.
            StoreError: the store cannot be read.
        """
        return cls.from_config(parse_config(load_file(path)), store=store, poll_interval=poll_interval)

    @classmethod
    def from_store(
        cls,
        store: Store | str,
        *,
        profile: Profile | str | None = None,
        unmatched: str | None = None,
        poll_interval: float | None = None,
    ) -> Gateway:
        """Build a gateway whose consumers, routes and services all come from a store, kept current.

        The store is read once now; a background thread then applies every change (see
        :meth:`attach`). A config file store also gives the gateway-wide settings (profile, ``unmatched``,
        the verification cache).

        Args:
            store: A :class:`~consumer_auth.store.Store`, or a URL: ``sqlite:///consumers.db``,
                ``postgresql://host/db``, or a ``.yaml``/``.json``/``.toml`` file path.
            profile: Overrides the profile (a config file's, else ``classic``).
            unmatched: Overrides the ``unmatched`` setting (a config file's, else ``reject``).
            poll_interval: Seconds between revision checks (the store's default when omitted).

        Raises:
            ConfigError: the store's content is invalid.
            StoreError: the store cannot be read (unreachable, wrong schema, ...).

        Example::

            gateway = Gateway.from_store("sqlite:///consumers.db")
            app = gateway.asgi(app)
        """
        options: dict[str, Any] = {}
        if profile is not None:
            options["profile"] = profile
        if unmatched is not None:
            options["unmatched"] = unmatched
        return cls._following(store, options, routes=True, poll_interval=poll_interval)

    @classmethod
    def _following(
        cls, store: Store | str, options: dict[str, Any], *, routes: bool, poll_interval: float | None
    ) -> Gateway:
        """A gateway built with the store's first snapshot, then attached to the store."""
        from .store import StoreWatcher, open_store

        opened = open_store(store) if isinstance(store, str) else store
        try:
            snapshot = opened.load()
            settings = snapshot.config
            built: dict[str, Any] = {"consumers": snapshot.consumers}
            if routes:
                built.update(routes=snapshot.routes, services=snapshot.services)
            if settings is not None:
                built.update(
                    profile=settings.profile,
                    unmatched=settings.unmatched,
                    cache_size=settings.cache_size,
                    cache_ttl=settings.cache_ttl,
                    trusted_proxies=settings.trusted_proxies,
                    brute_force_store=settings.brute_force_store,
                    verification_limits=settings.verification_limits,
                    path_matching=settings.path_matching,
                )
            gateway = cls(**{**built, **options})
            watcher = StoreWatcher(gateway, opened, routes=routes, poll_interval=poll_interval)
            watcher.start(snapshot)
        except BaseException:
            opened.close()
            raise
        gateway._watcher = watcher
        return gateway

    # -- run-time changes -----------------------------------------------------------------------------

    def replace(
        self,
        *,
        consumers: Iterable[Consumer] | None = None,
        routes: Iterable[Route] | None = None,
        services: Iterable[Service] | None = None,
    ) -> None:
        """Swap in new consumers and/or routes and services, all in one atomic step.

        Requests in flight finish with what they started with; the next request sees the new set.
        Whatever is not given stays as it is (giving ``routes`` without ``services`` keeps the
        services, and the other way round). A route's ``anonymous_consumer`` that no longer exists
        then answers 401 ``Invalid user authorization``.

        Raises:
            ConfigError: what was given is invalid (everything in force stays as it was).
        """
        index = ConsumerIndex(consumers) if consumers is not None else None
        new_routes = tuple(routes) if routes is not None else None
        new_services = tuple(services) if services is not None else None
        with self._lock:
            state = self._state
            compiled, readings = state.routes, state.readings
            if new_routes is not None or new_services is not None:
                new_routes = self._routes if new_routes is None else new_routes
                new_services = self._services if new_services is None else new_services
                compiled, readings = self._compile(new_routes, new_services)
                self._routes, self._services = new_routes, new_services
            self._state = _State(index if index is not None else state.consumers, compiled, readings)

    def _compile(
        self, routes: Iterable[Route], services: Iterable[Service]
    ) -> tuple[RouteIndex, OtherReadings]:
        passing = self.unmatched == "pass"
        index = compile_routes(routes, services, self.profile, head_with_get=passing)
        readings = other_readings(
            index, mounted=passing, case_insensitive=self.path_matching.case_insensitive
        )
        return index, readings

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

    def attach(
        self,
        store: Store | str,
        *,
        routes: bool = False,
        poll_interval: float | None = None,
    ) -> StoreWatcher:
        """Keep this gateway's consumers (and, with ``routes=True``, its routes and services) in step
        with a store.

        The store is read once now, in the calling thread; then a background thread waits for changes
        (PostgreSQL ``LISTEN/NOTIFY``, plus a revision check every ``poll_interval`` seconds as a safety
        net; files and SQLite are polled) and swaps each new snapshot in atomically. Requests never
        wait on the store: when it is unreachable the gateway keeps answering from its last snapshot,
        retries with backoff, logs once per change of state (logger ``consumer_auth.store``), and
        catches up when the store returns. Invalid content is logged and skipped.

        Args:
            store: A :class:`~consumer_auth.store.Store` or a store URL (see :meth:`from_store`).
            routes: Also take routes and services from the store, replacing the gateway's own.
            poll_interval: Seconds between revision checks (the store's default when omitted).

        Returns:
            The running :class:`~consumer_auth.store.StoreWatcher` (also :attr:`watcher`).

        Raises:
            ConfigError: the store's content is invalid.
            StoreError: the store cannot be read now.
        """
        from .store import StoreWatcher, open_store

        if self._watcher is not None:
            raise RuntimeError("this gateway is already attached to a store")
        opened = open_store(store) if isinstance(store, str) else store
        watcher = StoreWatcher(self, opened, routes=routes, poll_interval=poll_interval)
        try:
            watcher.start()
        except BaseException:
            opened.close()
            raise
        self._watcher = watcher
        return watcher

    @property
    def watcher(self) -> StoreWatcher | None:
        """The store watcher keeping this gateway current, if :meth:`attach` was called."""
        return self._watcher

    def close(self) -> None:
        """Stop following the store, if any (the gateway keeps its current consumers and routes)."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()

    @property
    def consumers(self) -> tuple[Consumer, ...]:
        """The consumers in force now."""
        return tuple(self._state.consumers)

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

        A path that servers may read differently from the route index (a control character, a segment
        such as ``..;`` or ``..\\``) is answered 400 first, in every mode (SPEC §8).

        Everything cheap happens here: routing, parsing the header, finding the credential, and checking
        a clear or ``{SHA}`` password or a success the verification cache remembers. Only a slow hash
        (argon2, bcrypt, APR1) that must really run comes back as ``Pending`` (with ``slow`` true), so an
        event loop can run it elsewhere; ``Pending.login`` says whose it is.

        On a route with ``brute_force`` limits, every attempt with credentials is a ``Pending``: its
        ``run()`` first asks the failure store whether the username or the client is locked out (429,
        without checking the password), then checks the password and counts a failure. It is ``slow``
        when the check may run a slow hash or the store talks to a server.
        """
        log = LOGGER.isEnabledFor(logging.INFO)
        host = facts.host
        if host is not None and "," in host:
            # More than one Host header (WSGI servers join them with commas; the ASGI adapter does the
            # same): the gateway and the app could each read a different one.
            if log:
                _log(None, _AMBIGUOUS_HOST, self.client_address(facts))
            return _AMBIGUOUS_HOST
        state = self._state
        found: CompiledRoute | Reject | None
        path = facts.path
        # _paths.plain(path), inlined: the usual path has no other reading (SPEC §8).
        if ODD_CHARACTER(path) is None and "./" not in path and path[-1:] != ".":
            found = state.routes.match(facts.method, path, facts.host)
            if found is not None and (found.guarded or state.readings.folded is None):
                return self._decide_route(found, state.consumers, facts, log)
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
                _log(None, decision, self.client_address(facts))
            return decision
        return self._decide_route(found, state.consumers, facts, log)

    def _read_otherwise(
        self, state: _State, facts: RequestFacts, matched: CompiledRoute | None, other: str | None
    ) -> CompiledRoute | Reject | None:
        """The route deciding a request that matched no route, or only one without auth (SPEC §8).

        Unmatched under ``unmatched: pass``: a path some route has (its host or method differing) is
        404; then the lenient reading, the path below a stripped service prefix and (with
        ``case_insensitive``) the lower-cased path are tried, in that order; the first that matches a
        route decides; one that matches a route's path only is 404. Matched by a route without auth:
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

    def _decide_route(
        self, route: CompiledRoute, consumers: ConsumerIndex, facts: RequestFacts, log: bool
    ) -> Decision | Pending:
        """Run a matched route's plugins on a request (for :meth:`decide` and :class:`Guard`)."""
        auth = route.auth
        if auth is None:
            decision = _finish(route, None, facts.method)
            if log:
                _log(route, decision, self.client_address(facts))
            return decision
        parsed = auth.parse(facts.authorization, consumers)
        if isinstance(parsed, Reject):
            outcome = auth.fallback(parsed, consumers)
            decision = _finish(route, outcome, facts.method)
            if log:
                _log(route, decision, self.client_address(facts), outcome, parsed.reason)
            return decision
        guard = auth.brute_force
        if guard is None and not log:
            checked_now = _check(
                route, auth, consumers, parsed, facts.method, self.verification_cache, self.on_rehash
            )
            if isinstance(checked_now, Pending) and checked_now.slow:
                return self._admit(checked_now, self.client_address(facts), route, log)
            return checked_now
        client = self.client_address(facts)
        attempt = _Attempt(route, auth, consumers, parsed, facts.method, client, log)
        keys = guard.keys(parsed.username, client) if guard is not None else ()
        if guard is not None and keys:
            store = self.brute_force_store
            cache, on_rehash = self.verification_cache, self.on_rehash
            pending = Pending(
                store.blocking or auth.may_be_slow(parsed, consumers),
                lambda: attempt.run_guarded(guard, keys, store, cache, on_rehash),
                parsed.username,
            )
            return self._admit(pending, client, route, log) if pending.slow else pending
        checked = auth.check(parsed, consumers, self.verification_cache, self.on_rehash)
        if isinstance(checked, SlowCheck):
            slow = checked.run
            pending = Pending(True, lambda: attempt.conclude(slow()), checked.login)
            return self._admit(pending, client, route, log)
        return attempt.conclude(checked)

    def _admit(
        self, pending: Pending, client: str | None, route: CompiledRoute, log: bool
    ) -> Pending | Reject:
        """``pending`` if its client (and the gateway) may have one more slow verification pending,
        else the 503 :data:`~consumer_auth._verify.BUSY` at once (see ``consumer_auth._verify``)."""
        subject = client_subject(client) if client is not None else None
        ticket = self._admission.enter(subject, pending.login)
        if ticket is None:
            if log:
                _log(route, BUSY, client)
            return BUSY
        run = pending.run

        def admitted() -> Decision:
            try:
                return run()
            finally:
                ticket.release()

        return Pending(True, admitted, pending.login)

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
            >>> gateway = Gateway(consumers=[Consumer("alex", password="123456")])
            >>> guard = gateway.guard(BasicAuthPlugin(), ConsumerRestrictionPlugin(whitelist=["alex"]))
            >>> guard.decide_now(RequestFacts("GET", "/")).status
            401
        """
        compiled, _ = compile_route(Route("/*", plugins=plugins), None, -1, self.profile)
        anonymous = compiled.auth.anonymous_consumer if compiled.auth is not None else None
        if anonymous is not None and self._state.consumers.consumer(anonymous) is None:
            raise ConfigError("basic-auth.anonymous_consumer", f"no consumer named {anonymous!r}")
        return Guard(self, compiled)

    # -- adapters ---------------------------------------------------------------------------------

    def wsgi(self, app: WSGIApplication) -> GatewayMiddleware:
        """Wrap a WSGI app: requests reach it only when this gateway allows them.

        The app finds the consumer in ``environ["consumer_auth.consumer"]`` and the identity headers
        (``HTTP_X_CONSUMER_USERNAME``, ...); a stripped service prefix moves to ``SCRIPT_NAME``.
        """
        from .wsgi import GatewayMiddleware

        return GatewayMiddleware(app, self)

    def asgi(self, app: ASGIApp) -> ASGIGatewayMiddleware:
        """Wrap an ASGI app (HTTP and websocket; lifespan passes through).

        The app finds the consumer in ``scope["consumer_auth.consumer"]`` and in ``scope["user"]``
        (Starlette's ``request.user``), with ``scope["auth"]`` holding its scopes; a stripped service
        prefix moves to ``root_path``. Slow hashes are verified off the event loop.
        """
        from .asgi import ASGIGatewayMiddleware

        return ASGIGatewayMiddleware(app, self)

    def asgi_proxy(
        self,
        *,
        upstream: Upstream | str | Mapping[str, Any] | None = None,
        max_body_bytes: int | None = None,
    ) -> ASGIProxy:
        """An ASGI app forwarding allowed requests to their upstream (SPEC §5; ``docs/proxy.md``).

        Needs httptools (``pip install 'consumer-auth[proxy]'``). Run it on any ASGI server, e.g.
        ``uvicorn.run(gateway.asgi_proxy())``, or use ``consumer-auth serve``.

        Args:
            upstream: Default upstream for routes without one (and for ``unmatched: pass``): a URL such
                as ``"http://127.0.0.1:9001"`` or an APISIX-style mapping.
            max_body_bytes: Largest request body for routes and services that set none (default: no
                limit); larger is 413 (``docs/security.md``).

        Raises:
            ConfigError: a route has no upstream and no default is given (at ``routes[i].upstream``), or
                ``unmatched`` is ``pass`` without a default upstream.
            ImportError: httptools is not installed.
        """
        try:
            from .proxy.asgi import ASGIProxy
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the ASGI proxy needs httptools: pip install 'consumer-auth[proxy]'", name=error.name
            ) from error

        return ASGIProxy(self, upstream=upstream, max_body_bytes=max_body_bytes)

    def wsgi_proxy(
        self,
        *,
        upstream: Upstream | str | Mapping[str, Any] | None = None,
        max_body_bytes: int | None = None,
    ) -> WSGIProxy:
        """A WSGI app forwarding allowed requests to their upstream, with pooled connections.

        The same rules and answers as :meth:`asgi_proxy`, with the standard library's HTTP client; run it
        on a threaded WSGI server (gunicorn with threads, uWSGI, waitress, ...).

        Args:
            upstream: Default upstream, as for :meth:`asgi_proxy`.
            max_body_bytes: As for :meth:`asgi_proxy`.

        Raises:
            ConfigError: as for :meth:`asgi_proxy`.
        """
        from .proxy.wsgi import WSGIProxy

        return WSGIProxy(self, upstream=upstream, max_body_bytes=max_body_bytes)


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
                Then only ``consumer-restriction`` runs: the request is not authenticated again, so a
                route's ``hide_credentials`` does not get in the way. An anonymous consumer (whose
                ``is_authenticated`` is false) counts as none: the guard asks for credentials.
        """
        gateway = self._gateway
        log = LOGGER.isEnabledFor(logging.INFO)
        if consumer is None or not consumer.is_authenticated:
            return gateway._decide_route(self._route, gateway._state.consumers, facts, log)
        restriction = self._route.restriction
        rejected = restriction.check(consumer, facts.method) if restriction is not None else None
        decision = rejected if rejected is not None else Allow(self._route, consumer)
        if log:
            client = gateway.client_address(facts)
            _log(self._route, decision, client, target=consumer.username, allowed="already_authenticated")
        return decision

    def decide_now(self, facts: RequestFacts, consumer: Consumer | None = None) -> Decision:
        """Like :meth:`decide`, verifying any password in the calling thread."""
        decision = self.decide(facts, consumer)
        return decision.run() if isinstance(decision, Pending) else decision


def _check(
    route: CompiledRoute,
    auth: BasicAuthCheck,
    consumers: ConsumerIndex,
    parsed: BasicCredentials,
    method: str,
    cache: VerificationCache | None,
    on_rehash: RehashHook | None,
) -> Decision | Pending:
    """Check the password of a route without limits or logs; only a slow hash that must really run is
    ``Pending``."""
    checked = auth.check(parsed, consumers, cache, on_rehash)
    if isinstance(checked, SlowCheck):
        slow = checked.run

        def run() -> Decision:
            outcome = slow()
            if isinstance(outcome, Reject):
                outcome = auth.fallback(outcome, consumers)
            return _finish(route, outcome, method)

        return Pending(True, run, checked.login)
    if isinstance(checked, Reject):
        return _finish(route, auth.fallback(checked, consumers), method)
    return _finish(route, checked, method)


class _Attempt:
    """One credential check that is logged and/or counted by brute-force limits."""

    __slots__ = ("auth", "client", "consumers", "credentials", "log", "method", "route")

    def __init__(
        self,
        route: CompiledRoute,
        auth: BasicAuthCheck,
        consumers: ConsumerIndex,
        credentials: BasicCredentials,
        method: str,
        client: str | None,
        log: bool,
    ) -> None:
        self.route, self.auth, self.consumers, self.credentials = route, auth, consumers, credentials
        self.method, self.client, self.log = method, client, log

    def conclude(self, checked: Reject | Authenticated) -> Decision:
        """Finish the attempt from the password check's outcome (``anonymous_consumer``, restriction)."""
        failure = checked.reason if isinstance(checked, Reject) else None
        outcome = self.auth.fallback(checked, self.consumers) if isinstance(checked, Reject) else checked
        decision = _finish(self.route, outcome, self.method)
        if self.log:
            _log(self.route, decision, self.client, outcome, failure, self._target())
        return decision

    def run_guarded(
        self,
        guard: BruteForceCheck,
        keys: tuple[str, ...],
        store: FailureStore,
        cache: VerificationCache | None,
        on_rehash: RehashHook | None,
    ) -> Decision:
        """Ask the store first (a lock answers 429 before any check, cached or not), then check and count."""
        retry_after = store.retry_after(keys)
        if retry_after > 0:
            decision: Decision = guard.reject(retry_after)
            if self.log:
                _log(self.route, decision, self.client, None, None, self._target())
            return decision
        checked = self.auth.check(self.credentials, self.consumers, cache, on_rehash)
        if isinstance(checked, SlowCheck):
            checked = checked.run()
        if isinstance(checked, Reject):
            locked = store.add_failure(keys, guard.limits)
            if locked:
                self._log_lockout(guard, locked)
        return self.conclude(checked)

    def _target(self) -> str | None:
        """The consumer whose credential username was tried, if it exists (a name from the config)."""
        found = self.consumers.credential(self.credentials.username)
        return found[0].username if found is not None else None

    def _log_lockout(self, guard: BruteForceCheck, locked: tuple[str, ...]) -> None:
        if not BRUTE_FORCE_LOGGER.isEnabledFor(logging.WARNING):
            return
        limits = guard.limits
        for key in locked:
            by_username = ":u:" in key
            target = self._target() if by_username else None
            subject = (
                ("consumer " + target if target else "an unknown username")
                if by_username
                else "client " + (client_subject(self.client) if self.client is not None else "?")
            )
            BRUTE_FORCE_LOGGER.warning(
                "locked out %s for %gs after %d failed attempts within %gs",
                subject,
                limits.lockout,
                limits.max_failures,
                limits.window,
                extra={
                    "subject": "username" if by_username else "client",
                    "route": _route_name(self.route),
                    "consumer": target,
                    "client": self.client,
                },
            )


def _route_name(route: CompiledRoute | None) -> str | None:
    if route is None:
        return None
    if route.id:
        return route.id
    return f"routes[{route.order}]" if route.order >= 0 else "guard"


def _log(
    route: CompiledRoute | None,
    decision: Decision,
    client: str | None,
    outcome: Reject | Authenticated | None = None,
    failure: str | None = None,
    target: str | None = None,
    allowed: str | None = None,
) -> None:
    """Write the one record of a decision. Every value comes from the configuration or is a code.

    ``target`` is the consumer a rejected attempt was for, ``allowed`` the reason of an allowed
    decision when it cannot be told from the decision itself.
    """
    if isinstance(decision, Reject):
        verdict, reason, status = "reject", decision.reason, decision.status
        consumer = outcome.consumer.username if isinstance(outcome, Authenticated) else target
    else:
        verdict, status = "allow", None
        consumer = decision.consumer.username if decision.consumer is not None else None
        if allowed is not None:
            reason = allowed
        elif decision.route is None:
            reason = "unmatched"
        elif decision.consumer is None:
            reason = "no_auth"
        elif decision.credential is None:
            reason = "anonymous"
        else:
            reason = "authenticated"
    name = _route_name(route)
    LOGGER.info(
        "%s %s route=%s consumer=%s client=%s",
        verdict,
        reason,
        name,
        consumer,
        client,
        extra={
            "outcome": verdict,
            "reason": reason,
            "status": status,
            "route": name,
            "consumer": consumer,
            "client": client,
            "failure": failure,
        },
    )


def _finish(route: CompiledRoute, outcome: Reject | Authenticated | None, method: str) -> Decision:
    if isinstance(outcome, Reject):
        return outcome
    consumer = outcome.consumer if outcome is not None else None
    credential = outcome.credential if outcome is not None else None
    if route.restriction is not None:
        rejected = route.restriction.check(consumer, method)
        if rejected is not None:
            return rejected
    return _allow(route, consumer, credential)


_ALLOWS: dict[
    tuple[int, int, int], tuple[CompiledRoute, Consumer | None, BasicAuthCredential | None, Allow]
] = {}
_ALLOWS_LIMIT = 4096


def _allow(route: CompiledRoute, consumer: Consumer | None, credential: BasicAuthCredential | None) -> Allow:
    """The (immutable) ``Allow`` of a route and consumer, built once and reused while both are in force.

    Keyed by identity; the entry keeps the objects it was built from and is used only if they are the
    very same, so an id reused by a new object never finds an old decision.
    """
    key = (id(route), id(consumer), id(credential))
    found = _ALLOWS.get(key)
    if found is not None and found[0] is route and found[1] is consumer and found[2] is credential:
        return found[3]
    allow = Allow(
        route,
        consumer,
        credential,
        _identity_headers(consumer, credential) if consumer is not None else (),
        # A login that did not verify never reaches the app (SPEC §8a): anonymous drops Authorization.
        hide_credentials=(route.auth is not None and route.auth.hide_credentials)
        or (consumer is not None and not consumer.is_authenticated),
        strip_prefix=route.strip_prefix,
    )
    if len(_ALLOWS) >= _ALLOWS_LIMIT:
        _ALLOWS.clear()  # bounded: replaced routes and consumers do not accumulate
    _ALLOWS[key] = (route, consumer, credential, allow)
    return allow


def _identity_headers(
    consumer: Consumer, credential: BasicAuthCredential | None
) -> tuple[tuple[str, str], ...]:
    """The identity headers of a consumer (and credential)."""
    headers = [("x-consumer-username", consumer.username)]
    if credential is not None and credential.id is not None:
        headers.append(("x-credential-identifier", credential.id))
    if consumer.custom_id is not None:
        headers.append(("x-consumer-custom-id", consumer.custom_id))
    return tuple(headers)
