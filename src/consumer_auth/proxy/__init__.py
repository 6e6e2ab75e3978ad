"""Forwarding proxies: the gateway in front of an upstream (SPEC §5).

:class:`~consumer_auth.proxy.asgi.ASGIProxy` (``gateway.asgi_proxy()``, needs the ``proxy`` or ``server``
extra for httptools) and :class:`~consumer_auth.proxy.wsgi.WSGIProxy` (``gateway.wsgi_proxy()``, standard
library only) share the sans-IO rules exported here, so they forward identically. The rules are written
out in ``docs/proxy.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._balance import Balancer
from ._plan import (
    BAD_GATEWAY,
    GATEWAY_TIMEOUT,
    HOP_BY_HOP,
    ClientRequest,
    UpstreamRequest,
    forward_target,
    response_headers,
    upstream_request,
)

if TYPE_CHECKING:
    from .asgi import ASGIProxy
    from .wsgi import WSGIProxy

__all__ = [
    "BAD_GATEWAY",
    "GATEWAY_TIMEOUT",
    "HOP_BY_HOP",
    "ASGIProxy",
    "Balancer",
    "ClientRequest",
    "UpstreamRequest",
    "WSGIProxy",
    "forward_target",
    "response_headers",
    "upstream_request",
]


def __getattr__(name: str) -> Any:
    # The forwarders are imported on first use: the ASGI one needs httptools, an optional dependency.
    if name == "ASGIProxy":
        from .asgi import ASGIProxy

        return ASGIProxy
    if name == "WSGIProxy":
        from .wsgi import WSGIProxy

        return WSGIProxy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
