"""Routes, services, and the route index (an exact-path map plus prefix buckets, never a list scan).

This module is long because routes, services, their compiled form and the index they are matched in (with
the other readings of SPEC §8 built from it) change together; splitting the values from the index is open.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from consumer_auth.errors import ConfigError

from ._methods import HTTP_METHODS
from ._validate import (
    describe,
    expect_bool,
    expect_int,
    expect_mapping,
    expect_str,
    expect_str_list,
    fail,
    reject_unknown,
)
from .pipeline import Pipeline, effective_plugins
from .plugin import Environment, Plugin, Profile, check_plugins
from .upstream import Upstream

__all__ = [
    "HTTP_METHODS",
    "CompiledRoute",
    "OtherReadings",
    "PathMatching",
    "Route",
    "RouteIndex",
    "Service",
    "normalize_host",
    "normalize_path",
    "other_readings",
]

_HOST_PATTERN = re.compile(r"(\*\.)?[a-z0-9_\-]+(\.[a-z0-9_\-]+)*\.?|\[[0-9a-f:.]+\]")


def _hosts(value: object, path: str) -> tuple[str, ...]:
    hosts = expect_str_list(value, path)
    for index, host in enumerate(hosts):
        if not _HOST_PATTERN.fullmatch(host.lower()):
            fail(f"{path}[{index}]", f"expected a host name or '*.domain', got {describe(host)}")
    return tuple(host.lower().rstrip(".") for host in hosts)


def _plugins(value: Iterable[Plugin], path: str = "plugins") -> tuple[Plugin, ...]:
    return check_plugins(tuple(value), path)


def _upstream(value: object, path: str = "upstream") -> Upstream | None:
    if value is None:
        return None
    try:
        return Upstream.parse(value)
    except ConfigError as error:
        raise error.within(path) from None


@dataclass(frozen=True, slots=True)
class Service:
    """A group of routes sharing a path prefix, hosts, an upstream and plugins.

    Args:
        id: How routes refer to the service (``service_id``).
        path_prefix: Prepended to each route's uri with one ``/`` between (``/v1`` + ``/json``).
        strip_path_prefix: Remove the prefix before the app or upstream sees the path (default true).
        hosts: Host names (``*.example.com`` wildcards allowed) the service answers; routes may override.
        upstream: Where to forward (proxy mode): a URL or an :class:`Upstream`.
        plugins: Plugins applying to every route of the service, unless a route has its own of that name.
        max_body_bytes: Largest request body its routes forward (proxy mode; a route may set its own);
            larger is 413. Default: the ``server`` section's, else no limit.

    Example:
        >>> Service("basic-auth-app", path_prefix="/v1", hosts=["example.com"]).path_prefix
        '/v1'
    """

    id: str
    path_prefix: str | None = None
    name: str | None = None
    strip_path_prefix: bool = True
    hosts: Sequence[str] | None = None
    upstream: Upstream | str | Mapping[str, Any] | None = None
    plugins: Sequence[Plugin] = ()
    desc: str | None = None
    max_body_bytes: int | None = None

    def __post_init__(self) -> None:
        expect_str(self.id, "id")
        if self.max_body_bytes is not None:
            expect_int(self.max_body_bytes, "max_body_bytes", minimum=0)
        if self.name is not None:
            expect_str(self.name, "name")
        if self.path_prefix is not None:
            prefix = expect_str(self.path_prefix, "path_prefix")
            if not prefix.startswith("/") or "*" in prefix or "?" in prefix:
                fail("path_prefix", f"expected a path starting with '/', got {describe(prefix)}")
            object.__setattr__(self, "path_prefix", prefix.rstrip("/") or None)
        expect_bool(self.strip_path_prefix, "strip_path_prefix")
        if self.hosts is not None:
            object.__setattr__(self, "hosts", _hosts(self.hosts, "hosts"))
        object.__setattr__(self, "upstream", _upstream(self.upstream))
        object.__setattr__(self, "plugins", _plugins(self.plugins))

    @property
    def upstream_config(self) -> Upstream | None:
        """The validated upstream, if any."""
        return self.upstream if isinstance(self.upstream, Upstream) else None


@dataclass(frozen=True, slots=True)
class Route:
    """A request pattern (uris, methods, hosts) and the plugins that guard it.

    Args:
        uri: An exact path (``/json``) or a prefix ending in ``*`` (``/json/*``). Give ``uri`` or ``uris``.
        uris: Several such paths.
        methods: Accepted methods; ``None`` accepts all.
        hosts: Host names (wildcards ``*.example.com`` allowed); overrides the service's hosts.
        priority: Higher wins among routes matching the same path the same way.
        plugins: Plugin objects; one of the same name as a service plugin replaces it.
        service_id: The :class:`Service` this route belongs to.
        upstream: Where to forward (proxy mode), overriding the service's upstream.
        max_body_bytes: Largest request body forwarded (proxy mode), overriding the service's; larger
            is 413.
        enable_websocket: Forward websocket upgrades (proxy mode), after the same decision as any request
            (APISIX's field); without it the ASGI proxy answers an upgrade 501.

    Example:
        >>> Route("/json", methods=["GET"], plugins=[BasicAuthPlugin()]).methods
        ('GET',)
    """

    uri: str | None = None
    uris: Sequence[str] | None = None
    id: str | None = None
    name: str | None = None
    methods: Sequence[str] | None = None
    hosts: Sequence[str] | None = None
    priority: int = 0
    plugins: Sequence[Plugin] = ()
    service_id: str | None = None
    upstream: Upstream | str | Mapping[str, Any] | None = None
    desc: str | None = None
    max_body_bytes: int | None = None
    enable_websocket: bool = False

    def __post_init__(self) -> None:
        if self.max_body_bytes is not None:
            expect_int(self.max_body_bytes, "max_body_bytes", minimum=0)
        if (self.uri is None) == (self.uris is None):
            fail("uri", "exactly one of 'uri' and 'uris' is required")
        uris = (expect_str(self.uri, "uri"),) if self.uri is not None else expect_str_list(self.uris, "uris")
        for index, uri in enumerate(uris):
            where = "uri" if self.uri is not None else f"uris[{index}]"
            if not uri.startswith("/") or "*" in uri[:-1] or "?" in uri:
                fail(
                    where,
                    f"expected a path starting with '/' (a '*' only at the end), got {describe(uri)}",
                )
        if self.uris is not None:
            object.__setattr__(self, "uris", uris)
        for name in ("id", "name", "service_id"):
            if getattr(self, name) is not None:
                expect_str(getattr(self, name), name)
        if self.methods is not None:
            methods = expect_str_list(self.methods, "methods")
            for index, method in enumerate(methods):
                if method not in HTTP_METHODS:
                    fail(
                        f"methods[{index}]",
                        f"expected an HTTP method in capitals, got {describe(method)}",
                    )
            object.__setattr__(self, "methods", methods)
        if self.hosts is not None:
            object.__setattr__(self, "hosts", _hosts(self.hosts, "hosts"))
        expect_int(self.priority, "priority")
        expect_bool(self.enable_websocket, "enable_websocket")
        object.__setattr__(self, "upstream", _upstream(self.upstream))
        object.__setattr__(self, "plugins", _plugins(self.plugins))

    @property
    def all_uris(self) -> tuple[str, ...]:
        """``uris``, or ``(uri,)``."""
        return tuple(self.uris) if self.uris is not None else (self.uri or "",)

    @property
    def upstream_config(self) -> Upstream | None:
        """The validated upstream, if any."""
        return self.upstream if isinstance(self.upstream, Upstream) else None


def normalize_host(host: str | None) -> str | None:
    """Lower-case a ``Host`` value and drop its port (``Example.com:8080`` → ``example.com``)."""
    if not host:
        return None
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    name, _, port = host.partition(":")
    return name.rstrip(".") if not port or port.isdigit() else host


def normalize_path(path: str) -> str:
    """Resolve ``.`` and ``..`` segments and repeated slashes, as a front-end server would.

    Matching on the normalized path means ``/public/../admin`` is guarded like ``/admin``. A path that
    does not start with ``/`` (some servers pass ``GET v1/admin`` on verbatim) is read as ``/`` + path,
    as routers read it.
    """
    if path[:1] != "/":
        path = "/" + path
    if "//" not in path and "/." not in path:
        return path
    segments: list[str] = []
    parts = path.split("/")
    for part in parts[1:-1]:
        if part in ("", "."):
            continue
        if part == "..":
            if segments:
                segments.pop()
            continue
        segments.append(part)
    last = parts[-1]
    if last == "..":
        if segments:
            segments.pop()
        last = ""
    elif last == ".":
        last = ""
    return "/" + "/".join([*segments, last]) if segments else "/" + last


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A route joined with its service and compiled for one gateway: what a match yields.

    ``plugins`` are the plugins in force (the service's, with the route's replacing those of the same
    name); ``pipeline`` is them compiled and ordered (:class:`~consumer_auth.sansio.pipeline.Pipeline`).
    """

    route: Route
    service: Service | None
    order: int
    plugins: Mapping[str, Plugin]
    pipeline: Pipeline
    upstream: Upstream | None
    strip_prefix: str
    methods: frozenset[str] | None
    exact_hosts: frozenset[str] | None
    wildcard_hosts: tuple[str, ...] = field(default=())
    label: str = field(default="", compare=False)
    """How logs name the route: its id, else ``routes[i]`` (``guard`` for a per-view guard)."""
    service_id: str | None = field(default=None, compare=False)
    max_body_bytes: int | None = None
    """The route's limit, else its service's (``None``: the proxy's default)."""
    guarded: bool = field(default=False, init=False)
    """Whether the route asks anything of a request (it has a plugin)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "guarded", bool(self.plugins))

    @property
    def id(self) -> str | None:
        """The route's id (or name)."""
        return self.route.id or self.route.name

    @property
    def enable_websocket(self) -> bool:
        """The route's ``enable_websocket``: the proxies forward websocket upgrades on it."""
        return self.route.enable_websocket

    def accepts(self, method: str, host: str | None) -> bool:
        """Whether this route takes a request with this method and (normalized) host."""
        if self.methods is not None and method not in self.methods:
            return False
        if self.exact_hosts is None:
            return True
        if host is None:
            return False
        return host in self.exact_hosts or any(host.endswith(suffix) for suffix in self.wildcard_hosts)


def compile_route(
    route: Route,
    service: Service | None,
    order: int,
    environment: Environment | Profile,
    *,
    head_with_get: bool = False,
) -> tuple[CompiledRoute, tuple[str, ...]]:
    """Join a route with its service; return it with the full paths it is matched on.

    The plugins in force are compiled into the route's pipeline with ``environment`` (the gateway's
    settings; a bare :class:`Profile` for a route compiled outside a gateway).

    With ``head_with_get`` a route accepting ``GET`` also accepts ``HEAD``. A gateway that passes unmatched
    requests to the app sets it: frameworks answer ``HEAD`` with the ``GET`` view, so a ``HEAD`` that
    matched no route would reach that view unauthenticated.
    """
    if isinstance(environment, Profile):
        environment = Environment(environment)
    merged = effective_plugins(service.plugins if service else (), route.plugins)
    prefix = service.path_prefix if service is not None else None
    paths = tuple(f"{prefix}/{uri.lstrip('/')}" if prefix else uri for uri in route.all_uris)
    hosts = route.hosts if route.hosts is not None else (service.hosts if service else None)
    upstream = route.upstream_config or (service.upstream_config if service else None)
    compiled = CompiledRoute(
        route=route,
        service=service,
        order=order,
        plugins=merged,
        pipeline=Pipeline(merged, environment),
        upstream=upstream,
        strip_prefix=prefix if prefix and service is not None and service.strip_path_prefix else "",
        methods=_methods(route.methods, head_with_get),
        exact_hosts=frozenset(h for h in hosts if not h.startswith("*.")) if hosts is not None else None,
        wildcard_hosts=tuple(h[1:] for h in hosts if h.startswith("*.")) if hosts is not None else (),
        label=route.id or route.name or (f"routes[{order}]" if order >= 0 else "guard"),
        service_id=service.id if service is not None else None,
        max_body_bytes=route.max_body_bytes
        if route.max_body_bytes is not None
        else (service.max_body_bytes if service is not None else None),
    )
    return compiled, paths


def _methods(methods: Sequence[str] | None, head_with_get: bool) -> frozenset[str] | None:
    if methods is None:
        return None
    if head_with_get and "GET" in methods:
        return frozenset((*methods, "HEAD"))
    return frozenset(methods)


class RouteIndex:
    """Finds the route for a request in time that does not grow with the number of routes.

    Exact paths are one dict lookup. Prefix routes sit in buckets keyed by their prefix: ``/json/*`` under
    ``/json/``, and a prefix that ends inside a segment (``/json*``) under the segment's head (``/``) with
    its tail (``json``). A lookup walks the request path's ``/`` boundaries (no deeper than the deepest
    head) from the last to the first, trying at each one the tails under that head, then the head itself:
    the longest prefix wins, and the cost grows with the number of segments in the path, never with the
    number of routes. Within a bucket,
    higher ``priority`` comes first, then configuration order.
    """

    __slots__ = ("_depth", "_exact", "_hosts", "_prefixes", "entries", "routes")

    def __init__(self, routes: Sequence[tuple[CompiledRoute, tuple[str, ...]]]) -> None:
        exact: dict[str, list[CompiledRoute]] = {}
        heads: dict[str, list[CompiledRoute]] = {}
        tails: dict[str, dict[str, list[CompiledRoute]]] = {}
        for compiled, paths in routes:
            for path in paths:
                if not path.endswith("*"):
                    exact.setdefault(path, []).append(compiled)
                    continue
                prefix = path[:-1]
                cut = prefix.rfind("/") + 1
                if cut == len(prefix):
                    heads.setdefault(prefix, []).append(compiled)
                else:
                    tails.setdefault(prefix[:cut], {}).setdefault(prefix[cut:], []).append(compiled)

        def ranked(bucket: list[CompiledRoute]) -> tuple[CompiledRoute, ...]:
            return tuple(sorted(bucket, key=lambda r: (-r.route.priority, r.order)))

        self._exact = {path: ranked(bucket) for path, bucket in exact.items()}
        # head -> (tails under it, longest first; the routes of the head itself): a longer prefix wins.
        self._prefixes: dict[
            str, tuple[tuple[tuple[str, tuple[CompiledRoute, ...]], ...], tuple[CompiledRoute, ...]]
        ] = {
            head: (
                tuple(
                    (tail, ranked(bucket))
                    for tail, bucket in sorted(tails.get(head, {}).items(), key=lambda t: -len(t[0]))
                ),
                ranked(heads.get(head, [])),
            )
            for head in {*heads, *tails}
        }
        # The deepest head: boundaries of a request path below it cannot start a prefix.
        self._depth = max((head.count("/") for head in (*heads, *tails)), default=0)
        self.routes = tuple(compiled for compiled, _ in routes)
        self._hosts = any(compiled.exact_hosts is not None for compiled in self.routes)
        self.entries = tuple(routes)
        """The routes with the full paths each is matched on, as given."""

    def match(
        self, method: str, path: str, host: str | None, *, any_method_or_host: bool = False
    ) -> CompiledRoute | None:
        """The best route for this request, or ``None``.

        Args:
            method: The request method.
            path: The decoded request path.
            host: The ``Host`` header as sent (port and case do not matter).
            any_method_or_host: Match on the path alone: the route whose path matches, whatever its
                ``methods`` and ``hosts`` say (to tell "no route has this path" from a mismatch).
        """
        path = normalize_path(path)
        host = normalize_host(host)
        loose = any_method_or_host
        bucket = self._exact.get(path)
        if bucket is not None:
            for route in bucket:
                if loose or route.accepts(method, host):
                    return route
        cuts: list[int] = []
        cut = 0
        for _ in range(self._depth):
            cut = path.find("/", cut) + 1
            if not cut:
                break
            cuts.append(cut)
        prefixes = self._prefixes
        for cut in reversed(cuts):
            found = prefixes.get(path[:cut])
            if found is None:
                continue
            under, bucket = found
            for tail, routes in under:
                if path.startswith(tail, cut):
                    for route in routes:
                        if loose or route.accepts(method, host):
                            return route
            for route in bucket:
                if loose or route.accepts(method, host):
                    return route
        return None


@dataclass(frozen=True, slots=True)
class PathMatching:
    """How paths are matched besides the exact reading (``path_matching:`` in the configuration).

    Args:
        case_insensitive: Under ``unmatched: pass``, and for a path a route without auth matched, also
            match guarded routes case-insensitively (``/ADMIN`` is decided by a guarded ``/admin``), for
            upstreams that route that way (IIS, a case-insensitive filesystem). Default false.
    """

    case_insensitive: bool = False

    def __post_init__(self) -> None:
        expect_bool(self.case_insensitive, "case_insensitive")

    @classmethod
    def from_config(cls, value: object) -> PathMatching:
        """Build from a configuration mapping (errors are relative to the section)."""
        if isinstance(value, PathMatching):
            return value
        config = expect_mapping(value, "")
        reject_unknown(config, ("case_insensitive",), "")
        return cls(**config)


@dataclass(frozen=True, slots=True)
class OtherReadings:
    """The indexes asked when a path may be read another way than the route index reads it (SPEC §8).

    Attributes:
        plain: Every route, its service prefix not stripped: a request decided by a route on another
            reading of its path goes on with its path as it came.
        mounted: Under ``unmatched: pass``, the guarded routes of services that strip their prefix, at
            their path below the prefix (``/v1`` + ``/json`` at ``/json``): the app (or an upstream that is
            the same app) serves that path too, so it is guarded too.
        folded: With ``path_matching.case_insensitive``, the guarded routes (and mounted ones) at their
            lower-cased paths.
    """

    plain: RouteIndex
    mounted: RouteIndex | None = None
    folded: RouteIndex | None = None


def other_readings(index: RouteIndex, *, mounted: bool, case_insensitive: bool) -> OtherReadings:
    """Build the :class:`OtherReadings` of a route index."""
    plain: list[tuple[CompiledRoute, tuple[str, ...]]] = []
    below: list[tuple[CompiledRoute, tuple[str, ...]]] = []
    for compiled, paths in index.entries:
        unstripped = replace(compiled, strip_prefix="") if compiled.strip_prefix else compiled
        plain.append((unstripped, paths))
        if mounted and compiled.strip_prefix and compiled.guarded:
            below.append((unstripped, tuple("/" + uri.lstrip("/") for uri in compiled.route.all_uris)))
    folded = None
    if case_insensitive:
        folded = RouteIndex(
            [
                (route, tuple(path.lower() for path in paths))
                for route, paths in (*plain, *below)
                if route.guarded
            ]
        )
    return OtherReadings(RouteIndex(plain), RouteIndex(below) if below else None, folded)


def routes_by_service(services: Iterable[Service]) -> dict[str, Service]:
    """Services keyed by id; a duplicate id is a :class:`ConfigError` at ``services[i].id``."""
    found: dict[str, Service] = {}
    for index, service in enumerate(services):
        if not isinstance(service, Service):
            raise ConfigError(f"services[{index}]", f"expected a Service, got {describe(service)}")
        if service.id in found:
            raise ConfigError(f"services[{index}].id", f"duplicate service id {service.id!r}")
        found[service.id] = service
    return found
