"""The values the core hands to the adapters: what a request is, and what to do with it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .consumers import BasicAuthCredential, Consumer
    from .routing import CompiledRoute

__all__ = [
    "IDENTITY_HEADERS",
    "IDENTITY_KEYS",
    "IDENTITY_SPELLINGS",
    "Allow",
    "Decision",
    "Pending",
    "Reject",
    "RequestFacts",
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


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the core needs to know about a request, whichever protocol carried it.

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
    """

    method: str
    path: str
    host: str | None = None
    authorization: tuple[str, ...] = field(default=(), repr=False)
    client: str | None = None
    forwarded_for: tuple[str, ...] = ()


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
        object.__setattr__(
            self, "raw_headers", tuple((n.lower().encode(), v.encode("latin-1")) for n, v in full)
        )


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
    """

    route: CompiledRoute | None
    consumer: Consumer | None = None
    credential: BasicAuthCredential | None = None
    identity_headers: tuple[tuple[str, str], ...] = ()
    hide_credentials: bool = False
    strip_prefix: str = ""


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
