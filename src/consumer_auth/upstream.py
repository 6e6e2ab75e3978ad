"""Where a route forwards to (proxy mode): a URL or an APISIX-style upstream object."""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ._validate import (
    describe,
    expect_bool,
    expect_choice,
    expect_int,
    expect_list,
    expect_mapping,
    expect_number,
    expect_str,
    fail,
    reject_unknown,
)
from .errors import ConfigError

__all__ = [
    "ActiveCheck",
    "HealthChecks",
    "PassiveCheck",
    "Timeout",
    "Upstream",
    "UpstreamNode",
    "UpstreamTLS",
]

logger = logging.getLogger("consumer_auth.proxy")

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


@dataclass(frozen=True, slots=True)
class UpstreamTLS:
    """How to speak TLS to an ``https`` upstream (``upstream.tls``).

    Args:
        verify: Check the upstream's certificate and host name (default true). ``false`` is logged as a
            warning when the configuration is loaded.
        ca_file: PEM file of the certificate authorities to trust instead of the system's store.
        client_cert: PEM file of the client certificate to present (mutual TLS), with ``client_key``.
        client_key: PEM file of that certificate's private key.

    The files are read when the configuration is loaded (relative paths from the working directory);
    a file that cannot be read or parsed is a :class:`~consumer_auth.ConfigError` naming its field.
    """

    verify: bool = True
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    @classmethod
    def parse(cls, value: object) -> UpstreamTLS:
        """Build from the ``tls`` mapping (errors are relative to it)."""
        config = expect_mapping(value, "")
        reject_unknown(config, ("verify", "ca_file", "client_cert", "client_key"), "")
        verify = expect_bool(config.get("verify", True), "verify")
        files = {
            name: expect_str(config[name], name) if config.get(name) is not None else None
            for name in ("ca_file", "client_cert", "client_key")
        }
        if (files["client_cert"] is None) != (files["client_key"] is None):
            missing = "client_key" if files["client_key"] is None else "client_cert"
            fail(missing, "required with " + ("client_cert" if missing == "client_key" else "client_key"))
        tls = cls(verify, files["ca_file"], files["client_cert"], files["client_key"])
        tls.context()  # read the files now: a mistake is a load error, not a 502 per request
        return tls

    def context(self) -> ssl.SSLContext:
        """The client TLS context (one per distinct setting, shared: contexts are thread-safe).

        Raises:
            ConfigError: at ``ca_file`` or ``client_cert`` when a file cannot be read or used.
        """
        return _tls_context(self)


@lru_cache(maxsize=256)
def _tls_context(tls: UpstreamTLS) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif tls.ca_file is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificates and host names
        try:
            context.load_verify_locations(cadata=_read_pem(tls.ca_file, "ca_file"))
        except ssl.SSLError:
            fail("ca_file", f"{tls.ca_file!r} holds no usable PEM certificate")
        if not context.get_ca_certs():
            fail("ca_file", f"no certificate found in {tls.ca_file!r}")
    if tls.client_cert is not None and tls.client_key is not None:
        _read_pem(tls.client_cert, "client_cert")
        _read_pem(tls.client_key, "client_key")
        try:
            context.load_cert_chain(tls.client_cert, tls.client_key)
        except (ssl.SSLError, OSError):
            fail(
                "client_cert",
                "the certificate and key cannot be used together (PEM files, key not encrypted)",
            )
    return context


def _read_pem(path: str, where: str) -> str:
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "not a PEM text file"
        fail(where, f"cannot read {path!r} ({reason})")
    if "-----BEGIN " not in text:
        fail(where, f"{path!r} is not a PEM file")
    return text


_ACTIVE_HEALTHY_STATUSES = frozenset({200, 302})
_ACTIVE_UNHEALTHY_STATUSES = frozenset({429, 404, 500, 501, 502, 503, 504, 505})
_PASSIVE_HEALTHY_STATUSES = frozenset(
    {200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 306, 307, 308}
)
_PASSIVE_UNHEALTHY_STATUSES = frozenset({429, 500, 503})


@dataclass(frozen=True, slots=True)
class ActiveCheck:
    """Probes sent to every node (``upstream.checks.active``, APISIX's fields and defaults).

    ``type`` is ``http``, ``https`` (TLS as the upstream's ``tls`` says) or ``tcp`` (a connection is
    the probe); left out, it follows the upstream's scheme. A probe that gets one of ``healthy_statuses`` counts as a success, one of
    ``unhealthy_statuses`` as an HTTP failure; a connection that cannot be made is a TCP failure, no
    answer within ``timeout`` a timeout. ``healthy_successes`` successes in a row make an unhealthy node
    healthy again; ``http_failures``, ``tcp_failures`` or ``timeouts`` in a row make a healthy one
    unhealthy. Healthy nodes are probed every ``healthy_interval`` seconds, unhealthy ones every
    ``unhealthy_interval``.
    """

    type: str | None = None
    http_path: str = "/"
    timeout: float = 1.0
    healthy_interval: float = 1.0
    healthy_successes: int = 2
    healthy_statuses: frozenset[int] = _ACTIVE_HEALTHY_STATUSES
    unhealthy_interval: float = 1.0
    unhealthy_statuses: frozenset[int] = _ACTIVE_UNHEALTHY_STATUSES
    http_failures: int = 5
    tcp_failures: int = 2
    timeouts: int = 3


@dataclass(frozen=True, slots=True)
class PassiveCheck:
    """Health judged from the proxied traffic itself (``upstream.checks.passive``).

    Responses with one of ``unhealthy_statuses`` are HTTP failures, a connection that fails a TCP failure,
    an upstream timeout a timeout; ``http_failures``, ``tcp_failures`` or ``timeouts`` of them in a row
    (0: never) make the node unhealthy. A response with one of ``healthy_statuses`` resets the counts.
    Only the active probes bring an unhealthy node back, which is why APISIX, and this, require
    ``checks.active`` with ``checks.passive``.
    """

    healthy_statuses: frozenset[int] = _PASSIVE_HEALTHY_STATUSES
    healthy_successes: int = 5
    unhealthy_statuses: frozenset[int] = _PASSIVE_UNHEALTHY_STATUSES
    http_failures: int = 5
    tcp_failures: int = 2
    timeouts: int = 7


@dataclass(frozen=True, slots=True)
class HealthChecks:
    """``upstream.checks``: active probes, and optionally passive marking from real traffic."""

    active: ActiveCheck
    passive: PassiveCheck | None = None

    @classmethod
    def parse(cls, value: object) -> HealthChecks:
        """Build from the ``checks`` mapping (errors are relative to it)."""
        config = expect_mapping(value, "")
        reject_unknown(config, ("active", "passive"), "")
        if config.get("active") is None:
            fail("active", "required (only active probes can bring an unhealthy node back, as in APISIX)")
        active = _parse_active(expect_mapping(config["active"], "active"))
        passive = None
        if config.get("passive") is not None:
            passive = _parse_passive(expect_mapping(config["passive"], "passive"))
        return cls(active, passive)


def _statuses(value: object, path: str) -> frozenset[int]:
    items = expect_list(value, path)
    if not items:
        fail(path, "expected at least one status")
    return frozenset(
        expect_int(item, f"{path}[{index}]", minimum=200, maximum=599) for index, item in enumerate(items)
    )


def _section(config: Mapping[str, Any], name: str, allowed: tuple[str, ...], path: str) -> Mapping[str, Any]:
    section = expect_mapping(config.get(name, {}), f"{path}.{name}")
    reject_unknown(section, allowed, f"{path}.{name}")
    return section


def _count(section: Mapping[str, Any], name: str, path: str, default: int, minimum: int) -> int:
    return expect_int(section.get(name, default), f"{path}.{name}", minimum=minimum, maximum=254)


def _parse_active(config: Mapping[str, Any]) -> ActiveCheck:
    path = "active"
    reject_unknown(config, ("type", "http_path", "timeout", "interval", "healthy", "unhealthy"), path)
    defaults = ActiveCheck()
    kind = None
    if config.get("type") is not None:
        kind = expect_choice(config["type"], f"{path}.type", ("http", "https", "tcp"))
    http_path = expect_str(config.get("http_path", "/"), f"{path}.http_path")
    if not http_path.startswith("/") or any(c in http_path for c in " \r\n\x00"):
        fail(f"{path}.http_path", f"expected a path starting with '/', got {describe(http_path)}")
    timeout = expect_number(config.get("timeout", defaults.timeout), f"{path}.timeout")
    interval = expect_number(config.get("interval", defaults.healthy_interval), f"{path}.interval")
    healthy = _section(config, "healthy", ("interval", "successes", "http_statuses"), path)
    unhealthy = _section(
        config, "unhealthy", ("interval", "http_statuses", "http_failures", "tcp_failures", "timeouts"), path
    )
    return ActiveCheck(
        type=kind,
        http_path=http_path,
        timeout=timeout,
        healthy_interval=expect_number(healthy.get("interval", interval), f"{path}.healthy.interval"),
        healthy_successes=_count(healthy, "successes", f"{path}.healthy", defaults.healthy_successes, 1),
        healthy_statuses=_statuses(healthy["http_statuses"], f"{path}.healthy.http_statuses")
        if "http_statuses" in healthy
        else defaults.healthy_statuses,
        unhealthy_interval=expect_number(unhealthy.get("interval", interval), f"{path}.unhealthy.interval"),
        unhealthy_statuses=_statuses(unhealthy["http_statuses"], f"{path}.unhealthy.http_statuses")
        if "http_statuses" in unhealthy
        else defaults.unhealthy_statuses,
        http_failures=_count(unhealthy, "http_failures", f"{path}.unhealthy", defaults.http_failures, 1),
        tcp_failures=_count(unhealthy, "tcp_failures", f"{path}.unhealthy", defaults.tcp_failures, 1),
        timeouts=_count(unhealthy, "timeouts", f"{path}.unhealthy", defaults.timeouts, 1),
    )


def _parse_passive(config: Mapping[str, Any]) -> PassiveCheck:
    path = "passive"
    reject_unknown(config, ("type", "healthy", "unhealthy"), path)
    if "type" in config:
        expect_choice(config["type"], f"{path}.type", ("http", "https", "tcp"))
    defaults = PassiveCheck()
    healthy = _section(config, "healthy", ("http_statuses", "successes"), path)
    unhealthy = _section(
        config, "unhealthy", ("http_statuses", "http_failures", "tcp_failures", "timeouts"), path
    )
    return PassiveCheck(
        healthy_statuses=_statuses(healthy["http_statuses"], f"{path}.healthy.http_statuses")
        if "http_statuses" in healthy
        else defaults.healthy_statuses,
        healthy_successes=_count(healthy, "successes", f"{path}.healthy", defaults.healthy_successes, 0),
        unhealthy_statuses=_statuses(unhealthy["http_statuses"], f"{path}.unhealthy.http_statuses")
        if "http_statuses" in unhealthy
        else defaults.unhealthy_statuses,
        http_failures=_count(unhealthy, "http_failures", f"{path}.unhealthy", defaults.http_failures, 0),
        tcp_failures=_count(unhealthy, "tcp_failures", f"{path}.unhealthy", defaults.tcp_failures, 0),
        timeouts=_count(unhealthy, "timeouts", f"{path}.unhealthy", defaults.timeouts, 0),
    )


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
    tls: UpstreamTLS = field(default_factory=UpstreamTLS)
    checks: HealthChecks | None = None

    def server_name(self, node: UpstreamNode) -> str:
        """The TLS server name (SNI, and the name the certificate must match) for ``node``:
        ``upstream_host`` when set, else the node's host."""
        if self.upstream_host is not None:
            return self.upstream_host
        return node.host[1:-1] if node.host.startswith("[") else node.host

    @classmethod
    def parse(cls, value: object) -> Upstream:
        """Build an upstream from a URL or a mapping; errors are relative to the upstream's place."""
        if isinstance(value, Upstream):
            return value
        if isinstance(value, str):
            return cls._from_url(value)
        config = expect_mapping(value, "")
        reject_unknown(
            config, ("nodes", "scheme", "pass_host", "upstream_host", "timeout", "type", "tls", "checks"), ""
        )
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
        tls = UpstreamTLS()
        if config.get("tls") is not None:
            try:
                tls = UpstreamTLS.parse(config["tls"])
            except ConfigError as error:
                raise error.within("tls") from None
            if not tls.verify:
                logger.warning(
                    "upstream %s: tls.verify is false: its certificate is not checked",
                    ", ".join(node.authority for node in nodes),
                )
        checks = None
        if config.get("checks") is not None:
            try:
                checks = HealthChecks.parse(config["checks"])
            except ConfigError as error:
                raise error.within("checks") from None
        return cls(nodes, scheme, pass_host, upstream_host, timeout, tls, checks)

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
