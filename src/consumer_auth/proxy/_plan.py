"""The forwarding rules, sans-IO: what the upstream request looks like, and which response headers pass.

Both forwarders (ASGI and WSGI) describe the client's request as a :class:`ClientRequest`, let
:func:`upstream_request` turn it and the gateway's :class:`~consumer_auth.Allow` into an
:class:`UpstreamRequest`, and filter the upstream's answer with :func:`response_headers`. Nothing here
does I/O, so the two forwarders cannot disagree on a header.

This module is long because every header rule of a forwarded request (hop-by-hop, identity, the
``X-Forwarded-*`` set, framing, the target) sits in one place, so that both forwarders apply the same.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes

from consumer_auth.sansio.decision import (
    IDENTITY_KEYS,
    Allow,
    Reject,
    RequestFacts,
    header_key,
    json_reject,
    spellings,
)
from consumer_auth.sansio.gateway import BAD_REQUEST
from consumer_auth.sansio.routing import normalize_host
from consumer_auth.sansio.upstream import Upstream, UpstreamNode

__all__ = [
    "BAD_GATEWAY",
    "GATEWAY_TIMEOUT",
    "HOP_BY_HOP",
    "IDEMPOTENT",
    "NOT_IMPLEMENTED",
    "TOO_LARGE",
    "ClientRequest",
    "UpstreamRequest",
    "connection_tokens",
    "forward_target",
    "names_framing",
    "node_authority",
    "port_number",
    "response_headers",
    "upstream_request",
]

Header = tuple[bytes, bytes]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
"""Headers that concern one connection only and are never forwarded, in either direction.

Every header named in a ``Connection`` header is treated the same way. ``Proxy-Authenticate`` and
``Proxy-Authorization`` (RFC 2616's list) are addressed to this proxy, so they do not travel on either.
"""

BAD_GATEWAY = json_reject(502, "error_msg", "502 Bad Gateway")
"""The answer when the upstream cannot be reached, resets the connection or answers garbage."""

GATEWAY_TIMEOUT = json_reject(504, "error_msg", "504 Gateway Timeout")
"""The answer when the upstream does not connect, read or answer within its timeouts."""

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
"""Methods that may be sent twice (RFC 9110 §9.2.2): only these are replayed after a reused upstream
connection fails before answering, and only when none of their body went out (both proxies)."""

TOO_LARGE = json_reject(413, "error_msg", "413 Request Entity Too Large", reason="body_too_large")
"""The answer to a request body over its route's ``max_body_bytes``."""

NOT_IMPLEMENTED = json_reject(501, "error_msg", "501 Not Implemented")
"""The answer to an allowed websocket handshake: the forwarders do not carry websockets."""

_FORWARDED = (
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-forwarded-port",
    b"x-real-ip",
)
# Set by the gateway itself: the client's copies of the identity headers never pass; Host is chosen by
# pass_host; Expect was answered by the server that handed us the request; Content-Length is written by
# the forwarder from the body it sends (the framing the body came with, never a header it lost).
_REPLACED = frozenset({*IDENTITY_KEYS, *_FORWARDED, b"host", b"expect", b"content-length"})
# Headers that say where a request ends or where it goes: one named in Connection would be dropped while
# its body still went out, and the upstream would read that body as a request of its own.
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"host"})
# The server that answers the client sets its own Date and Server, as nginx (and so APISIX) does.
_RESPONSE_REPLACED = frozenset({b"date", b"server"})
# The usual Connection values name only headers that are dropped anyway.
_NAMES_NOTHING_MORE = frozenset({b"keep-alive", b"close", b"Keep-Alive", b"Close"})
# Every spelling header_key reads alike is removed (x_consumer_username is x-consumer-username): servers
# behind the proxy may map them to one CGI variable. Names arrive in lower case.
_REQUEST_DROP = spellings(HOP_BY_HOP | _REPLACED)
_REQUEST_DROP_CREDENTIALS = _REQUEST_DROP | {b"authorization"}
_RESPONSE_DROP = HOP_BY_HOP | _RESPONSE_REPLACED
# Request headers whose value the rules read (besides deciding whether they pass).
_READ = frozenset({b"host", b"x-forwarded-for", b"transfer-encoding", b"content-length", b"connection"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters a path segment may hold unencoded (RFC 3986 pchar, plus "/").
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_NOT_ON_REQUEST_LINE = re.compile(rb"[\x00-\x20\x7f]")
_SCHEMES = {"http": b"http", "https": b"https"}
_CHUNKED = (b"transfer-encoding", b"chunked")
# "%" as a byte value: ``b"%" in raw`` would first try b"%" as an integer inside CPython, raising and
# clearing a TypeError on every request.
_PERCENT = 0x25


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """What a forwarder knows about the client's request, beyond the :class:`RequestFacts`.

    Attributes:
        headers: Every header as received, names in lower case, values as bytes.
        scheme: ``http`` or ``https``, as the client spoke to this server.
        peer: The client's address (the TCP peer), if known.
        server_port: The port the client connected to, if known.
        raw_path: The path exactly as it was on the request line (percent-encoding intact), when the
            server tells it; ``None`` otherwise.
        query: The raw query string, without ``?``.
    """

    headers: Sequence[Header]
    scheme: str = "http"
    peer: str | None = None
    server_port: int | None = None
    raw_path: bytes | None = None
    query: bytes = b""


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """The request to send upstream, except ``Host`` (which depends on the node, see :meth:`host`).

    Attributes:
        method: The HTTP method.
        target: Path and query for the request line (ASCII bytes).
        headers: Header fields to send, names in lower case; no ``Host``, no hop-by-hop header, no
            ``Content-Length`` (the forwarder writes the framing: :meth:`framing`).
        client_host: The client's ``Host`` value, for ``pass_host: pass``.
        content_length: The request body's length, when the client gave one.
        chunked: The client sent a body of unknown length (``Transfer-Encoding: chunked``).
    """

    method: str
    target: bytes
    headers: tuple[Header, ...]
    client_host: bytes | None
    content_length: int | None
    chunked: bool

    @property
    def has_body(self) -> bool:
        """Whether a request body follows the headers."""
        return self.chunked or bool(self.content_length)

    def framing(self, *, chunked: bool) -> Header | None:
        """The header that frames the body as it is sent: ``transfer-encoding: chunked`` when
        ``chunked``, else the client's ``content-length`` (``None`` when it gave none)."""
        if chunked:
            return _CHUNKED
        if self.content_length is None:
            return None
        return (b"content-length", b"%d" % self.content_length)

    def host(self, upstream: Upstream, node: UpstreamNode) -> bytes:
        """The ``Host`` header for this node: the client's (``pass``), the node's, or ``upstream_host``."""
        if upstream.pass_host == "rewrite" and upstream.upstream_host is not None:  # noqa: S105
            return upstream.upstream_host.encode("latin-1")
        if upstream.pass_host == "pass" and self.client_host is not None:  # noqa: S105
            return self.client_host
        return node_authority(upstream, node).encode("latin-1")


def node_authority(upstream: Upstream, node: UpstreamNode) -> str:
    """``host:port`` of a node, the port left out when it is the scheme's default (as a client writes it)."""
    if node.port == _DEFAULT_PORTS.get(upstream.scheme):
        return node.host
    return node.authority


def port_number(value: object) -> int | None:
    """A server's port as the server tells it, or ``None`` when it tells none that is usable.

    ASGI servers disagree on the type of ``scope["server"][1]``: uvicorn, hypercorn and daphne give an
    ``int``, granian a ``str``, and a server on a unix socket gives ``None``; WSGI's ``SERVER_PORT`` is a
    ``str``. A port out of 1-65535 or not made of ASCII digits (``"80a"``, ``""``) reads as ``None``.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str | bytes):
        if not (value.isascii() and value.isdigit()):
            return None
        value = int(value)
    if isinstance(value, int) and 0 < value < 65536:
        return value
    return None


def _listed(value: bytes, into: set[bytes] | None) -> set[bytes] | None:
    """Add the header names a ``Connection`` value lists to ``into``."""
    if value in _NAMES_NOTHING_MORE:
        return into
    listed = into if into is not None else set()
    listed.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return listed


def names_framing(listed: Iterable[bytes]) -> bool:
    """Whether header names listed in ``Connection`` (lower case) name a framing header:
    ``Content-Length``, ``Transfer-Encoding`` or ``Host``, in any spelling :func:`header_key` reads
    alike. Such a request is refused (400): dropping the header as hop-by-hop would send its body
    without the framing it came with."""
    return any(header_key(name) in _FRAMING for name in listed)


def connection_tokens(value: bytes) -> set[bytes]:
    """The header names a ``Connection`` value lists, lower case."""
    return _listed(value, None) or set()


def response_headers(headers: Iterable[Header]) -> list[Header]:
    """The upstream's response headers a client may see: hop-by-hop ones (and those named in
    ``Connection``) removed, and ``Date``/``Server`` left to the server that answers the client.

    Names come back in lower case.
    """
    kept: list[Header] = []
    listed: set[bytes] | None = None
    for name, value in headers:
        name = name.lower()
        if name in _RESPONSE_DROP:
            if name == b"connection":
                listed = _listed(value, listed)
        else:
            kept.append((name, value))
    if listed:
        kept = [header for header in kept if header[0] not in listed]
    return kept


def _decodes_to(raw: bytes, path: str) -> bool:
    """Whether a raw path means exactly ``path`` (percent-decoded as UTF-8, or latin-1 as a fallback)."""
    decoded = unquote_to_bytes(raw) if _PERCENT in raw else raw
    try:
        return decoded.decode("utf-8") == path
    except UnicodeDecodeError:
        return decoded.decode("latin-1") == path


def _ascii_target(target: bytes) -> bytes:
    """Percent-encode what may not stand on a request line (non-ASCII bytes, controls, spaces)."""
    if target.isascii() and not _NOT_ON_REQUEST_LINE.search(target):
        return target
    return b"".join(bytes((byte,)) if 0x20 < byte < 0x7F else b"%%%02X" % byte for byte in target)


def forward_target(path: str, raw_path: bytes | None, strip_prefix: str, query: bytes) -> bytes:
    """The request-line target to send upstream.

    The raw path is kept byte for byte (``%2F`` stays ``%2F``), minus the stripped service prefix, when
    it decodes to exactly the path the gateway authorized. When it does not (it had ``..``, ``//`` or
    ``.`` segments, which the gateway resolved before matching; or the server did not tell the raw
    path), the authorized path is sent, percent-encoded, so the upstream can never be asked for
    something other than what was authorized. The query string is always kept as the client sent it.

    Args:
        path: The decoded, normalized path the gateway matched (``RequestFacts.path``).
        raw_path: The path as on the client's request line, if known.
        strip_prefix: The service prefix to remove (``""`` for none).
        query: The raw query string.
    """
    target: bytes | None = None
    if raw_path is not None and raw_path.startswith(b"/") and _decodes_to(raw_path, path):
        if not strip_prefix:
            target = raw_path
        else:
            prefix = strip_prefix.encode("utf-8")
            if raw_path.startswith(prefix) and raw_path[len(prefix) : len(prefix) + 1] in (b"", b"/"):
                target = raw_path[len(prefix) :] or b"/"
    if target is None:
        rest = path[len(strip_prefix) :] if strip_prefix and path.startswith(strip_prefix) else path
        target = quote(rest or "/", safe=_PATH_SAFE).encode("ascii")
    target = _ascii_target(target)
    return target + b"?" + _ascii_target(query) if query else target


# Per-request work whose result repeats from one request to the next (the same consumers, the same
# Host): kept, bounded, so that it is done once. The one-entry cache is a tuple, replaced whole, so
# threads (the WSGI proxy) never see half of one.
_IDENTITY_CACHE: dict[tuple[tuple[str, str], ...], tuple[Header, ...]] = {}
_CACHE_LIMIT = 1024
_last_host: tuple[bytes, bytes | None] = (b"", None)


def _encoded_identity(headers: tuple[tuple[str, str], ...]) -> tuple[Header, ...]:
    """A decision's identity headers as they are sent upstream."""
    found = _IDENTITY_CACHE.get(headers)
    if found is None:
        found = tuple((name.encode(), value.encode("latin-1")) for name, value in headers)
        if len(_IDENTITY_CACHE) >= _CACHE_LIMIT:
            _IDENTITY_CACHE.clear()
        _IDENTITY_CACHE[headers] = found
    return found


def _forwarded_host(host: bytes) -> bytes | None:
    """The ``X-Forwarded-Host`` value of a client's ``Host``: normalized (:func:`normalize_host`),
    ``None`` when that leaves nothing."""
    global _last_host  # noqa: PLW0603 - a one-entry cache
    last = _last_host
    if last[0] == host:
        return last[1]
    name = normalize_host(host.decode("latin-1"))
    value = name.encode("latin-1") if name else None
    _last_host = (host, value)
    return value


def upstream_request(facts: RequestFacts, decision: Allow, client: ClientRequest) -> UpstreamRequest | Reject:
    """Build the upstream request from the client's request and the gateway's decision.

    - hop-by-hop headers and every header named in ``Connection`` are removed; a ``Connection`` naming
      ``Content-Length``, ``Transfer-Encoding`` or ``Host`` makes the request a 400
      (:data:`~consumer_auth.gateway.BAD_REQUEST`, returned instead of a request): the body would go out
      without the framing it came with;
    - client copies of the identity headers are removed and the decision's are added;
      ``Authorization`` goes when the route hides credentials;
    - ``X-Forwarded-For`` gets the peer appended to what the client sent; ``X-Forwarded-Proto``,
      ``X-Forwarded-Host``, ``X-Forwarded-Port`` and ``X-Real-IP`` are set from what this gateway saw
      (client-sent values are replaced, never trusted);
    - every removed name is removed in any spelling :func:`~consumer_auth.sansio.decision.header_key` reads
      alike (``X_Consumer_Username``, ``x_forwarded_for``);
    - ``Content-Length`` is not copied: the forwarder writes the framing of the body it sends
      (:attr:`UpstreamRequest.content_length` or chunked);
    - the path loses the service prefix (see :func:`forward_target`).
    """
    return build_upstream_request(
        facts,
        decision,
        client.headers,
        client.scheme,
        client.peer,
        client.server_port,
        client.raw_path,
        client.query,
    )


def build_upstream_request(
    facts: RequestFacts,
    decision: Allow,
    headers: Iterable[Header],
    scheme: str,
    peer_address: str | None,
    server_port: int | None,
    raw_path: bytes | None,
    query: bytes,
) -> UpstreamRequest | Reject:
    """:func:`upstream_request` with the :class:`ClientRequest`'s fields as arguments (the ASGI proxy
    calls it so, building no record per request)."""
    drop = _REQUEST_DROP_CREDENTIALS if decision.hide_credentials else _REQUEST_DROP
    kept: list[Header] = []
    forwarded_for: list[bytes] = []
    listed: set[bytes] | None = None
    client_host: bytes | None = None
    content_length: int | None = None
    chunked = False
    for name, value in headers:
        if name in _READ:
            if name == b"host":
                client_host = value
            elif name == b"x-forwarded-for":
                forwarded_for.append(value)
            elif name == b"transfer-encoding":
                chunked = chunked or value.strip().lower().endswith(b"chunked")
            elif name == b"content-length":
                if value.strip().isdigit():
                    content_length = int(value)
            else:
                listed = _listed(value, listed)
        if name not in drop:
            kept.append((name, value))
    if listed:
        if names_framing(listed):
            return BAD_REQUEST
        kept = [header for header in kept if header[0] not in listed]
    if chunked:  # Transfer-Encoding wins over Content-Length (RFC 9112 §6.3); the body is re-framed
        content_length = None
    kept += _encoded_identity(decision.identity_headers)
    peer = peer_address.encode("latin-1") if peer_address is not None else None
    if peer is not None:
        forwarded_for.append(peer)
    if forwarded_for:
        kept.append((b"x-forwarded-for", b", ".join(forwarded_for)))
    kept.append((b"x-forwarded-proto", _SCHEMES.get(scheme) or scheme.encode("latin-1")))
    forwarded_host = _forwarded_host(client_host) if client_host is not None else None
    if forwarded_host is not None:
        kept.append((b"x-forwarded-host", forwarded_host))
    port = server_port or _DEFAULT_PORTS.get(scheme)
    if port:
        kept.append((b"x-forwarded-port", b"%d" % port))
    if peer is not None:
        kept.append((b"x-real-ip", peer))
    return UpstreamRequest(
        facts.method,
        forward_target(facts.path, raw_path, decision.strip_prefix, query),
        tuple(kept),
        client_host,
        content_length,
        chunked,
    )
