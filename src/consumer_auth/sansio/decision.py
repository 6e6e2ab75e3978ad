"""The values the core hands to the adapters: what a request is, and what to do with it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from .consumers import BasicAuthCredential, Consumer
    from .upstream import Upstream

__all__ = [
    "IDENTITY_HEADERS",
    "IDENTITY_KEYS",
    "IDENTITY_SPELLINGS",
    "Allow",
    "Decision",
    "HeaderReader",
    "MatchedRoute",
    "Pending",
    "Reject",
    "RequestFacts",
    "encode_headers",
    "header_key",
    "json_reject",
    "spellings",
]

IDENTITY_HEADERS = ("x-consumer-username", "x-credential-identifier", "x-consumer-custom-id")
"""Header names the gateway sets after authentication; client-sent copies are always removed."""

IDENTITY_KEYS = frozenset(name.encode() for name in IDENTITY_HEADERS)
""":data:`IDENTITY_HEADERS` as :func:`header_key` gives them (lower-case bytes)."""


def header_key(name: bytes) -> bytes:
    """A header name as the servers behind the gateway may read it: lower case, ``_`` read as ``-``.

    CGI-style servers (``wsgiref``, granian's WSGI, most CGI gateways) map both ``X-Consumer-Username``
    and ``X_Consumer_Username`` to ``HTTP_X_CONSUMER_USERNAME``, so a header the gateway removes must
    be recognised in either spelling. Every comparison of a client header name with a name the
    gateway removes or sets goes through this rule.
    """
    return name.lower().replace(b"_", b"-")


def spellings(names: Iterable[bytes]) -> frozenset[bytes]:
    """Every lower-case header name that :func:`header_key` reads as one of ``names`` (lower case,
    with ``-``): ``x-real-ip``, ``x_real-ip``, ``x-real_ip``, ``x_real_ip``.

    Precomputed once, the set applies the rule to lower-case names (ASGI's, and the proxies') with the
    one set lookup an exact comparison costs.
    """
    found: set[bytes] = set()
    for name in names:
        first, *rest = name.split(b"-")
        variants = [first]
        for part in rest:
            variants = [variant + separator + part for variant in variants for separator in (b"-", b"_")]
        found.update(variants)
    return frozenset(found)


IDENTITY_SPELLINGS = spellings(IDENTITY_KEYS)
"""Every lower-case spelling of :data:`IDENTITY_HEADERS` (``x_consumer_username`` too)."""


_TEXT_PLAIN = ("Content-Type", "text/plain; charset=utf-8")

HeaderReader = Callable[[str], "str | None"]
"""Reads a request header: a lower-case name in, its first value (or ``None``) out."""


class MatchedRoute(Protocol):
    """What a decision says about the route it was made on (a :class:`~consumer_auth.sansio.routing.CompiledRoute`)."""

    @property
    def id(self) -> str | None:
        """The route's id (or name)."""

    @property
    def order(self) -> int:
        """Its place in the configuration (``-1`` for a per-view guard)."""

    @property
    def label(self) -> str:
        """How logs and metrics name it: its id, else ``routes[i]`` (``guard`` for a per-view guard)."""

    @property
    def service_id(self) -> str | None:
        """The id of its service, if it has one."""

    @property
    def upstream(self) -> Upstream | None:
        """Where it forwards to (proxy mode), if anywhere."""

    @property
    def strip_prefix(self) -> str:
        """The service prefix removed before the app or upstream sees the path."""

    @property
    def enable_websocket(self) -> bool:
        """Whether the proxies forward websocket upgrades on it (APISIX's ``enable_websocket``)."""

    @property
    def max_body_bytes(self) -> int | None:
        """Its largest request body the proxies forward, else its service's (``None``: the proxy's)."""


class RequestFacts(NamedTuple):
    """What the core needs to know about a request, whichever protocol carried it.

    Immutable; a named tuple, because every request makes one (the cheapest record Python builds).
    ``repr`` never shows the ``Authorization`` values, and ``headers`` takes no part in comparisons.

    Attributes:
        method: Upper-case HTTP method (``GET``); websocket handshakes use ``GET``.
        path: The decoded path (no query string).
        host: The ``Host`` header (or server name), possibly with a port; ``None`` if unknown. Several
            ``Host`` headers are given joined by commas (as WSGI servers join them): the gateway refuses
            such a request (400), since the app could read another one than the gateway.
        authorization: Every ``Authorization`` header value, in order (never shown by ``repr``).
        client: The peer's address as the server saw it (WSGI ``REMOTE_ADDR``, ASGI ``scope["client"]``);
            ``None`` if unknown. ``X-Forwarded-For`` only counts when this peer is a trusted proxy (see
            :meth:`consumer_auth.Gateway.client_address`).
        forwarded_for: Every ``X-Forwarded-For`` header value, in order.
        headers: Reads any other request header, for plugins (see :meth:`header`); the adapters give
            one that looks the header up only when asked.
    """

    method: str
    path: str
    host: str | None = None
    authorization: tuple[str, ...] = ()
    client: str | None = None
    forwarded_for: tuple[str, ...] = ()
    headers: HeaderReader | None = None

    def header(self, name: str) -> str | None:
        """The first value of a request header (any case), or ``None`` when absent or unknown."""
        reader = self.headers
        return reader(name.lower()) if reader is not None else None

    def __repr__(self) -> str:
        return (
            f"RequestFacts(method={self.method!r}, path={self.path!r}, host={self.host!r}, "
            f"client={self.client!r}, forwarded_for={self.forwarded_for!r})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RequestFacts) and self[:6] == other[:6]

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self[:6])


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer the request directly, without calling the app or upstream.

    ``headers`` are the response headers (without ``Content-Length``). ``status_line``,
    ``wsgi_headers`` and ``raw_headers`` (lower-case bytes, for ASGI) are precomputed with
    ``Content-Length`` added. ``reason`` is a stable code saying why (``wrong_password``,
    ``no_route``, ...; see ``docs/security.md``); it is logged, never sent, and two rejections with the
    same bytes but different reasons compare equal.
    """

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    reason: str = field(default="rejected", compare=False)
    status_line: str = field(init=False)
    wsgi_headers: tuple[tuple[str, str], ...] = field(init=False)
    raw_headers: tuple[tuple[bytes, bytes], ...] = field(init=False)

    def __post_init__(self) -> None:
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = ""
        object.__setattr__(self, "status_line", f"{self.status} {phrase}".rstrip())
        full = (*self.headers, ("Content-Length", str(len(self.body))))
        object.__setattr__(self, "wsgi_headers", full)
        object.__setattr__(self, "raw_headers", encode_headers(full))


def encode_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[bytes, bytes], ...]:
    """Headers as ASGI carries them: lower-case names, names and values as latin-1 bytes."""
    return tuple((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers)


def json_reject(
    status: int, key: str, message: str, *extra: tuple[str, str], reason: str = "rejected"
) -> Reject:
    """A rejection whose body is ``{"<key>": "<message>"}`` and a newline, as APISIX writes it."""
    body = json.dumps({key: message}, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    return Reject(status, (_TEXT_PLAIN, *extra), body, reason)


@dataclass(frozen=True, slots=True)
class Allow:
    """Let the request through to the app or upstream, changed as described.

    Attributes:
        route: The matched route, or ``None`` when an unmatched request is passed through.
        consumer: The authenticated (or anonymous) consumer, if any.
        credential: The credential that authenticated, if any.
        identity_headers: Headers to add (client copies of :data:`IDENTITY_HEADERS` are removed first).
        hide_credentials: Remove every ``Authorization`` header before passing the request on.
        strip_prefix: The service path prefix to mount the app under ("" when nothing is stripped).
        response_headers: Headers the plugins' ``response`` phase adds to the answer of the app or upstream.
        raw_identity_headers: ``identity_headers`` as lower-case latin-1 bytes (ASGI), precomputed.
        environ_identity: ``identity_headers`` as WSGI environ keys and values, precomputed.
        raw_response_headers: ``response_headers`` as lower-case latin-1 bytes (ASGI), precomputed.
    """

    route: MatchedRoute | None
    consumer: Consumer | None = None
    credential: BasicAuthCredential | None = None
    identity_headers: tuple[tuple[str, str], ...] = ()
    hide_credentials: bool = False
    strip_prefix: str = ""
    response_headers: tuple[tuple[str, str], ...] = ()
    raw_identity_headers: tuple[tuple[bytes, bytes], ...] = field(init=False, repr=False, compare=False)
    environ_identity: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)
    raw_response_headers: tuple[tuple[bytes, bytes], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        headers = self.identity_headers
        environ = tuple(("HTTP_" + name.upper().replace("-", "_"), value) for name, value in headers)
        object.__setattr__(self, "raw_identity_headers", encode_headers(headers))
        object.__setattr__(self, "environ_identity", environ)
        object.__setattr__(self, "raw_response_headers", encode_headers(self.response_headers))

    def with_response_headers(
        self, headers: tuple[tuple[str, str], ...], raw: tuple[tuple[bytes, bytes], ...] | None = None
    ) -> Allow:
        """This decision with other ``response_headers`` (copied as it is: nothing else is computed
        again). ``raw`` is ``headers`` as :func:`encode_headers` gives them, when the caller has them."""
        # Every request of a route whose plugins add response headers makes one, so it is built as an
        # unfrozen twin of the same layout (plain slot stores, no object.__setattr__ per field) that
        # then becomes an Allow: the result is an Allow in every way.
        new = _AllowParts()
        new.route = self.route
        new.consumer = self.consumer
        new.credential = self.credential
        new.identity_headers = self.identity_headers
        new.hide_credentials = self.hide_credentials
        new.strip_prefix = self.strip_prefix
        new.response_headers = headers
        new.raw_identity_headers = self.raw_identity_headers
        new.environ_identity = self.environ_identity
        new.raw_response_headers = encode_headers(headers) if raw is None else raw
        new.__class__ = Allow  # type: ignore[assignment]
        return new  # type: ignore[return-value]


class _AllowParts:
    """An :class:`Allow` under construction: its slots, in its order, writable (see
    :meth:`Allow.with_response_headers`)."""

    __slots__ = Allow.__slots__
    route: MatchedRoute | None
    consumer: Consumer | None
    credential: BasicAuthCredential | None
    identity_headers: tuple[tuple[str, str], ...]
    hide_credentials: bool
    strip_prefix: str
    response_headers: tuple[tuple[str, str], ...]
    raw_identity_headers: tuple[tuple[bytes, bytes], ...]
    environ_identity: tuple[tuple[str, str], ...]
    raw_response_headers: tuple[tuple[bytes, bytes], ...]


# A field added to Allow must be copied by with_response_headers too.
assert set(Allow.__slots__) == set(_AllowParts.__annotations__)  # noqa: S101


Decision = Allow | Reject


@dataclass(frozen=True, slots=True)
class Pending:
    """A decision that needs a password verified first.

    ``run()`` does the verification and returns the decision. When ``slow`` is true (a hash such as
    argon2id, or a brute-force failure store that talks to a server), an asynchronous adapter must call
    ``run`` outside its event loop (:func:`consumer_auth.asgi.resolve` does). ``login`` is the
    username the client presented (known or not): adapters run one verification per login at a time,
    so a flood against one login cannot hold up the others (see ``docs/passwords.md``).
    """

    slow: bool
    run: Callable[[], Decision]
    login: str | None = field(default=None, repr=False)  # what a client typed: never shown
