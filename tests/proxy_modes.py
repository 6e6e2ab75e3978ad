"""The two forwarding modes of the conformance table: ``asgi-proxy`` and ``wsgi-proxy``.

Each builds, per named configuration, a gateway whose upstreams all point at one real echo server on
loopback, serves ``gateway.asgi_proxy()`` on uvicorn or ``gateway.wsgi_proxy()`` on werkzeug's threaded
server (loopback too), and sends every request over a real socket. The echo server answers with the same
JSON document as the in-process echo apps (``support.echo_document``), its ``consumer`` being the
``X-Consumer-Username`` header it received and its ``mount`` empty (the upstream never sees the prefix).
"""

from __future__ import annotations

import copy
from typing import Any

import configs
import proxy_servers
from consumer_auth import Gateway
from support import MODES, Headers, Mode, Reply

_echo: proxy_servers.UpstreamServer | None = None


def echo_upstream() -> proxy_servers.UpstreamServer:
    """The echo upstream every proxy mode forwards to (started once)."""
    global _echo
    if _echo is None:
        _echo = proxy_servers.start_upstream(proxy_servers.echo, "echo")
    return _echo


def proxied(name: str, upstream: str) -> dict[str, Any]:
    """Configuration ``name`` with every upstream replaced by ``upstream``."""
    return proxied_document(configs.CONFIGS[name], upstream)


def proxied_document(config: dict[str, Any], upstream: str) -> dict[str, Any]:
    """A configuration with every upstream replaced by ``upstream``."""
    document = copy.deepcopy(config)
    for key in ("services", "routes"):
        for item in document.get(key) or []:
            if "upstream" in item:
                item["upstream"] = upstream
    return document


class ProxyMode:
    """Serves one proxy per configuration, started on first use."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._ports: dict[str, int] = {}

    def port(self, config: str) -> int:
        if config not in self._ports:
            upstream = echo_upstream().url
            gateway = Gateway.from_dict(proxied(config, upstream))
            if self.kind == "asgi":
                self._ports[config] = proxy_servers.ASGIServer(gateway.asgi_proxy(upstream=upstream)).port
            else:
                self._ports[config] = proxy_servers.WSGIServer(gateway.wsgi_proxy(upstream=upstream)).port
        return self._ports[config]

    def request(self, config: str, method: str, path: str, headers: Headers) -> Reply:
        return proxy_servers.request(self.port(config), method, path, headers)


MODES["asgi-proxy"] = lambda: Mode("asgi-proxy", ProxyMode("asgi").request)
MODES["wsgi-proxy"] = lambda: Mode("wsgi-proxy", ProxyMode("wsgi").request)
