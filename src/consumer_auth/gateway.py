"""The public :class:`Gateway`: the sans-IO core plus configuration files, stores and the adapters.

Deciding lives in :mod:`consumer_auth.sansio` (request facts in, a decision out) and knows nothing of
what is here; this class adds what a user reaches for around it: ``from_file`` / ``from_store``, keeping
current with a store, and ``.wsgi()`` / ``.asgi()`` / ``.asgi_proxy()`` / ``.wsgi_proxy()``. The
adapters import the core only, so nothing imports back into this module.

Each decision is logged, when enabled, as one record on the ``consumer_auth.auth`` logger (see
:mod:`consumer_auth.sansio.log`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import GatewayConfig, gateway_options, load_file, parse_config
from .errors import ConfigError
from .sansio import gateway as core
from .sansio.gateway import BAD_REQUEST, NOT_FOUND, Guard, compile_routes
from .sansio.log import LOGGER

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from .asgi import ASGIApp, ASGIGatewayMiddleware
    from .metrics import Metrics
    from .proxy.asgi import ASGIProxy
    from .proxy.wsgi import WSGIProxy
    from .sansio.plugin import Profile
    from .sansio.upstream import Upstream
    from .store import Store, StoreWatcher
    from .wsgi import GatewayMiddleware

__all__ = ["BAD_REQUEST", "LOGGER", "NOT_FOUND", "Gateway", "Guard", "compile_routes"]


class Gateway(core.Gateway):
    """Consumers, services and routes, compiled once; decides what happens to each request.

    Args:
        consumers: The API clients and their credentials.
        routes: The routes to guard (``Route`` objects).
        services: The services routes may belong to.
        consumer_groups: The :class:`~consumer_auth.ConsumerGroup` objects consumers name with
            ``group_id``; a group's plugins apply to its consumers (consumer > group > route > service).
        profile: ``"classic"`` (the default: APISIX 2.x / API7 Cloud guide messages, which reveal whether a
            username exists) or ``"apisix-3"`` (one message for every credential failure, revealing nothing).
        unmatched: ``"reject"`` (the default) answers 404 ``Route Not Found`` to requests no route matches;
            ``"pass"`` hands them to the app unauthenticated (in-process modes, or the proxies' default
            upstream). A path some route has, with another host or method, is still 404; the lenient
            reading of a path, and a guarded route's path below a stripped service prefix, are matched
            too (SPEC §8, ``docs/security.md``).
        cache_size: How many recent successful slow-hash verifications to remember (``0``: none); see
            :class:`~consumer_auth.sansio.passwords.VerificationCache` and ``docs/passwords.md``.
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
        verification_limits: How many slow password verifications may be pending per client and in all
            (a :class:`~consumer_auth.sansio.admission.VerificationLimits` or its mapping, the
            ``verification:`` section); over a bound the answer is 503 at once.
        path_matching: A :class:`~consumer_auth.sansio.routing.PathMatching` or its mapping
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

    _watcher: StoreWatcher | None = None

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
        options = gateway_options(config)
        if store is None:
            return cls(consumers=config.consumers, consumer_groups=config.consumer_groups, **options)
        if config.consumers:
            raise ConfigError(
                "consumers", "the consumers come from the store: remove them from the configuration"
            )
        if config.consumer_groups:
            raise ConfigError(
                "consumer_groups",
                "the consumer groups come from the store: remove them from the configuration",
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
            built: dict[str, Any] = {
                "consumers": snapshot.consumers,
                "consumer_groups": snapshot.consumer_groups,
            }
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

    # -- adapters ---------------------------------------------------------------------------------

    def wsgi(self, app: WSGIApplication, *, metrics: Metrics | bool = False) -> GatewayMiddleware:
        """Wrap a WSGI app: requests reach it only when this gateway allows them.

        The app finds the consumer in ``environ["consumer_auth.consumer"]`` and the identity headers
        (``HTTP_X_CONSUMER_USERNAME``, ...); a stripped service prefix moves to ``SCRIPT_NAME``.

        Args:
            app: The app to protect.
            metrics: Count requests in Prometheus metrics (``docs/metrics.md``): a
                :class:`~consumer_auth.metrics.Metrics`, or ``True`` for the process-wide one on
                ``prometheus_client``'s global registry. Needs ``pip install 'consumer-auth[metrics]'``.
        """
        chose = _metrics_for(metrics)
        if chose is not None:
            from .metrics import MeteredGatewayMiddleware

            return MeteredGatewayMiddleware(app, self, chose)
        from .wsgi import GatewayMiddleware

        return GatewayMiddleware(app, self)

    def asgi(self, app: ASGIApp, *, metrics: Metrics | bool = False) -> ASGIGatewayMiddleware:
        """Wrap an ASGI app (HTTP and websocket; lifespan passes through).

        The app finds the consumer in ``scope["consumer_auth.consumer"]`` and in ``scope["user"]``
        (Starlette's ``request.user``), with ``scope["auth"]`` holding its scopes; a stripped service
        prefix moves to ``root_path``. Slow hashes are verified off the event loop.

        Args:
            app: The app to protect.
            metrics: As for :meth:`wsgi`.
        """
        chose = _metrics_for(metrics)
        if chose is not None:
            from .metrics import MeteredASGIGatewayMiddleware

            return MeteredASGIGatewayMiddleware(app, self, chose)
        from .asgi import ASGIGatewayMiddleware

        return ASGIGatewayMiddleware(app, self)

    def asgi_proxy(
        self,
        *,
        upstream: Upstream | str | Mapping[str, Any] | None = None,
        max_body_bytes: int | None = None,
        metrics: Metrics | bool = False,
    ) -> ASGIProxy:
        """An ASGI app forwarding allowed requests to their upstream (SPEC §5; ``docs/proxy.md``).

        Needs httptools (``pip install 'consumer-auth[proxy]'``). Run it on any ASGI server, e.g.
        ``uvicorn.run(gateway.asgi_proxy())``, or use ``consumer-auth serve``.

        Args:
            upstream: Default upstream for routes without one (and for ``unmatched: pass``): a URL such
                as ``"http://127.0.0.1:9001"`` or an APISIX-style mapping.
            max_body_bytes: Largest request body for routes and services that set none (default: no
                limit); larger is 413 (``docs/security.md``).
            metrics: As for :meth:`wsgi`; the proxy also measures the upstream and counts node health.

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

        return ASGIProxy(
            self, upstream=upstream, max_body_bytes=max_body_bytes, metrics=_metrics_for(metrics)
        )

    def wsgi_proxy(
        self,
        *,
        upstream: Upstream | str | Mapping[str, Any] | None = None,
        max_body_bytes: int | None = None,
        metrics: Metrics | bool = False,
    ) -> WSGIProxy:
        """A WSGI app forwarding allowed requests to their upstream, with pooled connections.

        The same rules and answers as :meth:`asgi_proxy`, with the standard library's HTTP client; run it
        on a threaded WSGI server (gunicorn with threads, uWSGI, waitress, ...).

        Args:
            upstream: Default upstream, as for :meth:`asgi_proxy`.
            max_body_bytes: As for :meth:`asgi_proxy`.
            metrics: As for :meth:`asgi_proxy`.

        Raises:
            ConfigError: as for :meth:`asgi_proxy`.
        """
        from .proxy.wsgi import WSGIProxy

        return WSGIProxy(
            self, upstream=upstream, max_body_bytes=max_body_bytes, metrics=_metrics_for(metrics)
        )


def _metrics_for(metrics: Metrics | bool) -> Metrics | None:
    """The :class:`~consumer_auth.metrics.Metrics` a ``metrics=`` argument names (importing
    ``prometheus_client`` only when it names one)."""
    if metrics is False:
        return None
    from .metrics import chosen

    return chosen(metrics)
