"""The plugin interface (SPEC §9): a name, a priority, a schema, and the phases a plugin takes part in.

A plugin is a small class. Its instances are what a user wrote (validated once, immutable); at load the
gateway calls :meth:`Plugin.compile` with its :class:`Environment`, sorts the compiled plugins of each
route by priority, and runs their phase methods on every request (see :mod:`consumer_auth.sansio.pipeline`).
The gateway knows no plugin by name. This module is long because the interface, its phases' request
object and the environment plugins compile against are documented together, for plugin authors.

Phases, in the order they run (APISIX's names in brackets):

``rewrite``       before authentication [rewrite]; sees the request only
``authenticate``  finds the consumer [rewrite of the auth plugins]; sets ``request.consumer``
``access``        after authentication [access]; sees the consumer, may reject
``response``      when the app or upstream answers [header_filter]; may add response headers

Each request phase returns ``None`` (go on), a :class:`~consumer_auth.Reject` (answer now), or a
:class:`Suspend` (blocking work, such as a slow hash or a network store, that an event loop must run
elsewhere; the pipeline goes on once it is done).
"""

from __future__ import annotations

import enum
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from consumer_auth.errors import ConfigError
from consumer_auth.sansio._validate import describe, reject_unknown
from consumer_auth.sansio.counters import Counters

if TYPE_CHECKING:
    from consumer_auth.sansio.consumers import BasicAuthCredential, Consumer, ConsumerIndex
    from consumer_auth.sansio.decision import MatchedRoute, Reject, RequestFacts
    from consumer_auth.sansio.failures import FailureStore
    from consumer_auth.sansio.passwords import VerificationCache

__all__ = [
    "PHASES",
    "Environment",
    "Plugin",
    "PluginRequest",
    "Profile",
    "QuickAccess",
    "QuickHeaders",
    "RehashHook",
    "Shortcut",
    "Suspend",
    "check_plugins",
    "plugin_class",
    "plugins_from_config",
    "register_plugin",
]

PHASES = ("rewrite", "authenticate", "access", "response")
"""The phases a plugin can take part in, in the order they run."""

P = TypeVar("P", bound="type[Plugin]")


class Profile(enum.Enum):
    """Which APISIX generation's answers to give.

    ``CLASSIC`` (the default) gives exactly the messages of APISIX 2.x and the API7 Cloud guide; it tells
    a client whether a username exists. ``APISIX_3`` answers every credential failure with
    ``Invalid user authorization`` and a ``WWW-Authenticate`` header, revealing nothing.
    """

    CLASSIC = "classic"
    APISIX_3 = "apisix-3"


RehashHook = Callable[["Consumer", "BasicAuthCredential", str], None]
"""``on_rehash(consumer, credential, new_hash)``: a credential's stored form is outdated; ``new_hash`` is a
fresh argon2id hash of the password that just verified, for a store to save."""


@dataclass(slots=True)
class Environment:
    """What a gateway gives its plugins when it compiles them (the same for every route of it).

    One object per gateway, read by the plugins at each request: setting ``gateway.brute_force_store``
    or ``gateway.on_rehash`` later changes it for every route.

    Attributes:
        profile: The gateway's :class:`Profile` (which messages to answer with).
        verification_cache: Remembers recent slow-hash successes (``None``: no cache).
        on_rehash: The gateway's rehash hook, if any.
        failure_store: Where brute-force failure counts live.
        client_address: The client address of a request, as the gateway's trusted proxies see it.
        counters: Where ``limit-count`` counts requests (in memory, or in Redis).
    """

    profile: Profile = Profile.CLASSIC
    verification_cache: VerificationCache | None = None
    on_rehash: RehashHook | None = None
    failure_store: FailureStore | None = None
    client_address: Callable[[RequestFacts], str | None] = field(default=lambda facts: facts.client)
    counters: Counters = field(default_factory=Counters)


Shortcut = Callable[
    ["RequestFacts", "ConsumerIndex"],
    "tuple[Consumer, BasicAuthCredential | None, bool] | Reject | None",
]
"""See :meth:`Plugin.shortcut`."""

QuickHeaders = tuple[tuple[tuple[str, str], ...], tuple[tuple[bytes, bytes], ...]]
"""Response headers a quick form adds: as (name, value) text, and the same as
:func:`~consumer_auth.sansio.decision.encode_headers` gives them (for ASGI)."""

QuickAccess = Callable[["RequestFacts", "Consumer", "MatchedRoute"], "Reject | QuickHeaders | None"]
"""See :meth:`Plugin.quick_access`."""


class PluginRequest:
    """One request as the plugins of its route see it, from the first phase to the last.

    Attributes:
        facts: The request (:class:`~consumer_auth.RequestFacts`); ``facts.header(name)`` reads any header.
        consumers: The consumers in force for this request.
        consumer: The consumer found by the ``authenticate`` phase (``None`` until then, or if none).
        credential: The credential that authenticated, if any (``None`` for an anonymous consumer).
        route_id: The matched route's id (or ``routes[i]``), ``"guard"`` for a per-view guard.
        service_id: The matched route's service id, if any.
        hide_credentials: Remove every ``Authorization`` header before the app or upstream sees the request.
        response_headers: Headers the ``response`` phase adds to the answer (name, value).
        failure: The reason code of a credential failure that was let through (``anonymous_consumer``).
        target: For the decision log: the consumer a rejected attempt was for (a configured name).
    """

    __slots__ = (
        "_client",
        "_environment",
        "consumer",
        "consumers",
        "credential",
        "facts",
        "failure",
        "hide_credentials",
        "log",
        "response_headers",
        "route_id",
        "service_id",
        "target",
    )

    def __init__(
        self,
        facts: RequestFacts,
        consumers: ConsumerIndex,
        environment: Environment,
        route_id: str,
        service_id: str | None,
        log: bool,
    ) -> None:
        self.facts = facts
        self.consumers = consumers
        self._environment = environment
        self.route_id = route_id
        self.service_id = service_id
        self.log = log
        self.consumer: Consumer | None = None
        self.credential: BasicAuthCredential | None = None
        self.hide_credentials = False
        self.response_headers: list[tuple[str, str]] = []
        self.failure: str | None = None
        self.target: str | None = None
        self._client: str | None | bool = False  # False: not computed yet

    @property
    def client(self) -> str | None:
        """The client address (trusted proxies' ``X-Forwarded-For`` applied), computed once."""
        found = self._client
        if found is False:
            found = self._client = self._environment.client_address(self.facts)
        return found  # type: ignore[return-value]

    def header(self, name: str) -> str | None:
        """The first value of a request header (any case), or ``None``."""
        return self.facts.header(name)


@dataclass(frozen=True, slots=True)
class Suspend:
    """Work a phase cannot do on an event loop (a slow hash, a call to a network store).

    ``run()`` does it and returns what the phase would have: ``None`` to go on, or a rejection. ``slow``
    says whether ``run`` blocks (an asynchronous adapter then runs it in a thread); ``login`` is the
    username a client presented, if any, so that one flood cannot hold up other logins.
    """

    slow: bool
    run: Callable[[], Reject | None]
    login: str | None = field(default=None, repr=False)  # what a client typed: never shown


class Plugin:
    """The base class of every plugin: subclass it, set ``name`` and ``priority``, write phase methods.

    A plugin takes part in a phase when its class defines that phase's method (``rewrite``,
    ``authenticate``, ``access``, ``response``). Higher ``priority`` runs earlier within a phase (APISIX's
    numbers: ``basic-auth`` 2520, ``consumer-restriction`` 2400, ``limit-count`` 1002).

    Configuration: :meth:`from_config` builds the plugin from its mapping in a configuration file. The
    default passes the mapping's keys to the constructor, refusing keys it does not take; the
    constructor (or ``__post_init__`` of a dataclass) checks the values and raises
    :class:`~consumer_auth.ConfigError` naming the field (``ConfigError("header", "expected a string")``),
    which the gateway places (``routes[0].plugins.require-header.header: expected a string``).

    Example:
        See ``docs/plugins.md`` for a complete plugin, tested in every mode.
    """

    __slots__ = ()

    name: ClassVar[str] = ""
    """The plugin's name in configurations (``basic-auth``); unique among registered plugins."""
    priority: ClassVar[int] = 0
    """Higher runs earlier within a phase."""

    @classmethod
    def from_config(cls, value: object) -> Plugin:
        """Build from a configuration mapping (``None`` is an empty one); errors are relative to the plugin.

        Raises:
            ConfigError: at the field that is wrong (an unknown key at its own name).
        """
        config = {} if value is None else value
        if not isinstance(config, Mapping):
            raise ConfigError("", f"expected a mapping, got {type(config).__name__}")
        allowed, required = _parameters(cls)
        if allowed is not None:
            reject_unknown(config, allowed, "")
        for name in required:
            if name not in config:
                raise ConfigError(name, "required")
        try:
            return cls(**config)
        except TypeError as error:  # a required field is missing, or an argument is refused
            raise ConfigError("", f"invalid fields ({error})") from None

    def compile(self, environment: Environment) -> Plugin:
        """The object whose phase methods run, precomputed for a gateway (default: the plugin itself).

        Override it to build responses once (see ``basic-auth``), or to read the gateway's settings.
        """
        return self

    def check_consumers(self, consumers: ConsumerIndex) -> None:
        """Check the plugin against the consumers in force at load (a name it refers to must exist).

        Raises:
            ConfigError: relative to the plugin (``anonymous_consumer: no consumer named 'x'``).
        """

    # Phase methods. A subclass defines the ones it takes part in; these are never called.
    def rewrite(self, request: PluginRequest) -> Reject | Suspend | None:
        """Before authentication: look at the request, reject it, or go on."""
        return None

    def authenticate(self, request: PluginRequest) -> Reject | Suspend | None:
        """Find the consumer (set ``request.consumer``), reject, or go on."""
        return None

    def access(self, request: PluginRequest) -> Reject | Suspend | None:
        """After authentication: allow (``None``) or reject, knowing ``request.consumer``."""
        return None

    def response(self, request: PluginRequest) -> None:
        """Add headers to the answer of an allowed request (``request.response_headers``)."""

    def shortcut(self) -> Shortcut | None:
        """A quicker form of this plugin's ``authenticate`` phase for the common case, if it has one.

        When this plugin is the only one of a route's pipeline taking part before authentication (in its
        ``authenticate`` phase only), and the decision log is off, the gateway calls
        ``shortcut(facts, consumers)`` instead of running that phase: it returns
        ``(consumer, credential, hide_credentials)`` for a plainly authenticated request (the ``access``
        and ``response`` phases of the other plugins then run as usual), a
        :class:`~consumer_auth.Reject` it is sure of, or ``None`` (having changed nothing and verified
        nothing) to run the phases after all. It must decide exactly as the phase would.
        """
        return None

    def quick_access(self) -> QuickAccess | None:
        """A quicker form of this plugin's ``access`` phase for the common case, if it has one.

        When a request was authenticated by a route's :meth:`shortcut`, its consumer brings no plugins
        of its own (nor of its group), the decision log is off, and every plugin of the route's
        ``access`` phase has a quick form (and none a ``response`` phase), the gateway calls
        ``quick(facts, consumer, route)`` instead of that phase, without a :class:`PluginRequest`:
        ``facts`` the request, ``consumer`` the authenticated consumer, ``route`` the matched route (its
        ``label`` is ``request.route_id``, its ``service_id`` ``request.service_id``). It returns
        ``None`` (go on), the response headers to add to the answer as :data:`QuickHeaders` (go on:
        what ``access`` would have added to ``request.response_headers``, and the same encoded, so that
        an ASGI adapter need not encode them each request), or a :class:`~consumer_auth.Reject`. It
        must decide, count and add exactly as the phase would, and never block (no :class:`Suspend`).
        """
        return None

    def phases(self) -> tuple[str, ...]:
        """The phases this plugin takes part in (the phase methods its class defines)."""
        kind = type(self)
        return tuple(phase for phase in PHASES if getattr(kind, phase) is not getattr(Plugin, phase))


def _parameters(cls: type[Plugin]) -> tuple[frozenset[str] | None, tuple[str, ...]]:
    """The keyword arguments a plugin's constructor takes (``None``: any), and those it requires."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # pragma: no cover - a builtin-like constructor
        return None, ()
    names: set[str] = set()
    required: list[str] = []
    open_ended = False
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.VAR_KEYWORD:
            open_ended = True
        elif parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            names.add(parameter.name)
            if parameter.default is parameter.empty:
                required.append(parameter.name)
    return (None if open_ended else frozenset(names)), tuple(required)


_REGISTRY: dict[str, type[Plugin]] = {}


def register_plugin(cls: P) -> P:
    """Make a plugin class usable by its ``name`` in configuration files (also a class decorator).

    Raises:
        ValueError: another class is registered under that name, or the class has no name.
        TypeError: ``cls`` is not a :class:`Plugin` subclass.

    Example::

        @register_plugin
        class RequireHeader(Plugin):
            name = "require-header"
    """
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise TypeError(f"expected a Plugin subclass, got {cls!r}")
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    found = _REGISTRY.get(cls.name)
    if found is not None and found is not cls:
        raise ValueError(f"a plugin named {cls.name!r} is already registered ({found.__qualname__})")
    _REGISTRY[cls.name] = cls
    return cls


def plugin_class(key: str) -> type[Plugin]:
    """The plugin class a configuration key names: a registered name, or a dotted import path
    (``package.module:Class`` or ``package.module.Class``).

    Raises:
        ConfigError: at ``key`` when nothing of that name is registered or importable as a plugin.
    """
    found = _REGISTRY.get(key)
    if found is not None:
        return found
    module_name, colon, attribute = key.partition(":")
    if not colon:
        module_name, _, attribute = key.rpartition(".")
    if not module_name or not attribute or not all(part.isidentifier() for part in module_name.split(".")):
        raise ConfigError(
            key, f"unknown plugin (expected one of: {', '.join(sorted(_REGISTRY))}, or a dotted path)"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError(key, f"cannot import module {module_name!r}") from None
    value = getattr(module, attribute, None)
    if not (isinstance(value, type) and issubclass(value, Plugin)) or not value.name:
        raise ConfigError(key, f"{attribute!r} of {module_name!r} is not a named Plugin subclass")
    return value


def plugins_from_config(value: Mapping[str, Any]) -> tuple[Plugin, ...]:
    """Build plugin objects from a ``plugins:`` mapping of a route, service or consumer (paths relative
    to it, such as ``basic-auth.realm``)."""
    built: list[Plugin] = []
    for key, config in value.items():
        kind = plugin_class(key)
        try:
            built.append(kind.from_config(config))
        except ConfigError as error:
            raise error.within(key) from None
    return tuple(built)


def check_plugins(plugins: tuple[Any, ...], where: str) -> tuple[Plugin, ...]:
    """Check a sequence of plugin objects (constructors of routes, services and consumers).

    Raises:
        ConfigError: at ``where[i]`` for something that is not a plugin, or a name given twice.
    """
    seen: set[str] = set()
    for index, plugin in enumerate(plugins):
        if not isinstance(plugin, Plugin) or not plugin.name:
            raise ConfigError(f"{where}[{index}]", f"expected a plugin object, got {describe(plugin)}")
        if plugin.name in seen:
            raise ConfigError(f"{where}[{index}]", f"plugin {plugin.name!r} given twice")
        seen.add(plugin.name)
    return plugins
