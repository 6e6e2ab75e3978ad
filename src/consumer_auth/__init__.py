"""consumer_auth: the Consumer + Basic Auth model of Apache APISIX for any WSGI or ASGI app.

Protect a whole app in two lines::

    from consumer_auth import Consumer, protect
    app.wsgi_app = protect(app.wsgi_app, consumers=[Consumer("alex", password="123456")])

or build a :class:`Gateway` from a configuration (``Gateway.from_file("gateway.yaml")``) with services,
routes and plugins, and wrap an app with ``gateway.wsgi(app)`` / ``gateway.asgi(app)`` — or put it in
front of an upstream with ``gateway.asgi_proxy()`` / ``gateway.wsgi_proxy()`` or ``consumer-auth serve``.
"""

from __future__ import annotations

from ._protect import protect
from .errors import (
    ConfigError,
    ConsumerAuthError,
    StoreError,
    StoreUnavailableError,
    UnsupportedAppError,
    UpstreamAbortedError,
)
from .failures import FailureStore, MemoryFailureStore, RedisFailureStore
from .gateway import Gateway
from .sansio.consumers import BasicAuthCredential, Consumer, ConsumerGroup
from .sansio.decision import Allow, Decision, Pending, Reject, RequestFacts, json_reject
from .sansio.passwords import hash_password
from .sansio.plugin import Plugin, PluginRequest, Suspend, register_plugin
from .sansio.plugins import BasicAuthPlugin, ConsumerRestrictionPlugin, Profile
from .sansio.plugins.brute_force import BruteForce
from .sansio.routing import Route, Service
from .sansio.upstream import Upstream
from .wsgi import CONSUMER_KEY

__all__ = [
    "Allow",
    "BasicAuthCredential",
    "BasicAuthPlugin",
    "BruteForce",
    "CONSUMER_KEY",
    "ConfigError",
    "Consumer",
    "ConsumerAuthError",
    "ConsumerGroup",
    "ConsumerRestrictionPlugin",
    "Decision",
    "FailureStore",
    "Gateway",
    "MemoryFailureStore",
    "Pending",
    "Plugin",
    "PluginRequest",
    "Profile",
    "RedisFailureStore",
    "Reject",
    "RequestFacts",
    "Route",
    "Service",
    "StoreError",
    "StoreUnavailableError",
    "Suspend",
    "UnsupportedAppError",
    "Upstream",
    "UpstreamAbortedError",
    "__version__",
    "hash_password",
    "json_reject",
    "protect",
    "register_plugin",
]

__version__ = "0.1.0"
