"""Where a route forwards to (proxy mode): a URL or an APISIX-style upstream object."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from consumer_auth.errors import ConfigError

from ._validate import (
    describe,
    expect_choice,
    expect_int,
    expect_list,
    expect_mapping,
    expect_number,
    expect_str,
    fail,
    reject_unknown,
)

__all__ = ["Timeout", "Upstream", "UpstreamNode"]

_HOST = re.compile(r"[A-Za-z0-9._\-]+|\[[0-9A-Fa-f:.]+\]")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class UpstreamNode:
    """One upstream server: ``host``, ``port`` and its balancing ``weight``."""

    host: str
    port: int
    weight: int = 1

    @property
    def authority(self) -> str:
        """``host:port`` as written in a ``Host`` header."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Timeout:
    """Upstream timeouts in seconds (APISIX's defaults: 60 each)."""

    connect: float = 60.0
    send: float = 60.0
    read: float = 60.0


def _parse_node(key: str, weight: object, path: str) -> UpstreamNode:
    host, colon, port_text = key.rpartition(":")
    if not colon or not port_text.isdigit() or not _HOST.fullmatch(host):
        fail(path, f"expected 'host:port', got {describe(key)}")
    port = int(port_text)
    if not 0 < port < 65536:
        fail(path, f"port out of range in {describe(key)}")
    return UpstreamNode(host, port, expect_int(weight, path, minimum=0))


@dataclass(frozen=True, slots=True)
class Upstream:
    """An upstream: nodes balanced by weight, scheme, how to set ``Host``, timeouts.

    Build one with :meth:`parse` from ``"http://127.0.0.1:9001"`` or from a mapping such as
    ``{"nodes": {"127.0.0.1:9001": 1}, "pass_host": "node", "timeout": {"read": 5}}``.
    """

    nodes: tuple[UpstreamNode, ...]
    scheme: str = "http"
    pass_host: str = "pass"  # noqa: S105 - APISIX's name for "pass the client's Host"
    upstream_host: str | None = None
    timeout: Timeout = field(default_factory=Timeout)

    @classmethod
    def parse(cls, value: object) -> Upstream:
        """Build an upstream from a URL or a mapping; errors are relative to the upstream's place."""
        if isinstance(value, Upstream):
            return value
        if isinstance(value, str):
            return cls._from_url(value)
        config = expect_mapping(value, "")
        reject_unknown(config, ("nodes", "scheme", "pass_host", "upstream_host", "timeout", "type"), "")
        if "type" in config:
            expect_choice(config["type"], "type", ("roundrobin",))
        scheme = expect_choice(config.get("scheme", "http"), "scheme", ("http", "https"))
        nodes = cls._nodes(config.get("nodes"))
        pass_host = expect_choice(config.get("pass_host", "pass"), "pass_host", ("pass", "node", "rewrite"))
        upstream_host = config.get("upstream_host")
        if upstream_host is not None:
            expect_str(upstream_host, "upstream_host")
        if pass_host == "rewrite" and upstream_host is None:  # noqa: S105 - not a password
            fail("upstream_host", "required when pass_host is 'rewrite'")
        timeout = Timeout()
        if "timeout" in config:
            raw = expect_mapping(config["timeout"], "timeout")
            reject_unknown(raw, ("connect", "send", "read"), "timeout")
            timeout = Timeout(**{k: expect_number(v, f"timeout.{k}") for k, v in raw.items()})
        return cls(nodes, scheme, pass_host, upstream_host, timeout)

    @staticmethod
    def _nodes(value: object) -> tuple[UpstreamNode, ...]:
        if value is None:
            fail("nodes", "required")
        nodes: list[UpstreamNode] = []
        if isinstance(value, Mapping):
            for key, weight in expect_mapping(value, "nodes").items():
                nodes.append(_parse_node(key, weight, f"nodes.{key}"))
        else:
            for index, item in enumerate(expect_list(value, "nodes")):
                where = f"nodes[{index}]"
                node = expect_mapping(item, where)
                reject_unknown(node, ("host", "port", "weight"), where)
                host = expect_str(node.get("host"), f"{where}.host")
                port = expect_int(node.get("port"), f"{where}.port", minimum=1, maximum=65535)
                nodes.append(_parse_node(f"{host}:{port}", node.get("weight", 1), where))
        if not nodes:
            fail("nodes", "expected at least one node")
        if not any(node.weight > 0 for node in nodes):
            fail("nodes", "expected at least one node with a weight above 0")
        return tuple(nodes)

    @classmethod
    def _from_url(cls, url: str) -> Upstream:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ConfigError(
                "", f"expected a URL such as 'http://127.0.0.1:9001', got {describe(url)}"
            ) from None
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ConfigError("", f"expected an http or https URL, got {describe(url)}")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ConfigError("", f"expected only scheme, host and port in the URL, got {describe(url)}")
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        node = UpstreamNode(host, port or _DEFAULT_PORTS[parts.scheme], 1)
        return cls((node,), parts.scheme)
