"""The ``server:`` section: what ``consumer-auth serve`` accepts from a client, and for how long."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, fields
from typing import Any

from .sansio._validate import expect_int, expect_mapping, expect_number, expect_str, fail, reject_unknown

__all__ = ["ServerLimits", "server_tls_context"]


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Limits and timeouts of the forwarding server (``server:`` in the configuration).

    A request over a size limit is refused before it reaches the gateway, with the status named below
    and a ``{"error_msg": ...}`` body, and its connection is closed. See ``docs/security.md``.

    Args:
        max_url_bytes: Longest request target (path and query); longer is 414.
        max_header_bytes: Largest request line plus header block; larger is 431.
        max_headers: Most header fields in one request; more is 431.
        header_timeout: Seconds a connection may take to send a complete request head, counted from
            its opening (or from the first byte of a further request on a kept-alive connection);
            slower is 408.
        body_timeout: Seconds a request body may stall (no byte arriving while the server wants one);
            slower is 408 (or the connection is dropped if the response has started).
        send_timeout: Seconds a client may leave the response unread (the server's send buffer full)
            before the connection is dropped.
        keep_alive_timeout: Seconds an idle kept-alive connection stays open between requests.
        max_connections: Most connections and requests in progress; past it, new requests get 503.
        max_connections_per_client: Most connections open at once from one client address (an IPv6
            client by its /64 network); a further one is answered 503 and closed. Default: a tenth of
            ``max_connections`` (at least 1).
        first_byte_timeout: Seconds a new connection may stay silent before its first byte; then it is
            closed without an answer. At most ``header_timeout``; default 5, or ``header_timeout`` if
            that is shorter.
        max_body_bytes: Largest request body, for every route (a route or service may set its own);
            larger is 413. Default: no limit.
        ssl_certfile: PEM certificate chain: with ``ssl_keyfile``, ``serve`` speaks TLS only (HTTP/1.1
            and HTTP/2 by ALPN) and forwards ``X-Forwarded-Proto: https``.
        ssl_keyfile: PEM private key of ``ssl_certfile`` (not encrypted).
    """

    max_url_bytes: int = 8 * 1024
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    send_timeout: float = 60.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 1000
    max_connections_per_client: int | None = None
    first_byte_timeout: float | None = None
    max_body_bytes: int | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def __post_init__(self) -> None:
        expect_int(self.max_url_bytes, "max_url_bytes", minimum=64, maximum=1 << 20)
        expect_int(self.max_header_bytes, "max_header_bytes", minimum=1024, maximum=1 << 24)
        expect_int(self.max_headers, "max_headers", minimum=1, maximum=10_000)
        for name in ("header_timeout", "body_timeout", "send_timeout", "keep_alive_timeout"):
            object.__setattr__(self, name, expect_number(getattr(self, name), name))
        expect_int(self.max_connections, "max_connections", minimum=1)
        if self.max_connections_per_client is None:
            object.__setattr__(self, "max_connections_per_client", max(1, self.max_connections // 10))
        else:
            expect_int(
                self.max_connections_per_client,
                "max_connections_per_client",
                minimum=1,
                maximum=self.max_connections,
            )
        if self.first_byte_timeout is None:
            object.__setattr__(self, "first_byte_timeout", min(5.0, self.header_timeout))
        else:
            first = expect_number(self.first_byte_timeout, "first_byte_timeout")
            if first > self.header_timeout:
                fail(
                    "first_byte_timeout",
                    f"expected at most header_timeout ({self.header_timeout:g}), got {first:g}",
                )
            object.__setattr__(self, "first_byte_timeout", first)
        if self.max_body_bytes is not None:
            expect_int(self.max_body_bytes, "max_body_bytes", minimum=0)

        certfile, keyfile = self.ssl_certfile, self.ssl_keyfile
        if certfile is not None:
            expect_str(certfile, "ssl_certfile")
        if keyfile is not None:
            expect_str(keyfile, "ssl_keyfile")
        if (certfile is None) != (keyfile is None):
            missing, given = (
                ("ssl_keyfile", "ssl_certfile") if keyfile is None else ("ssl_certfile", "ssl_keyfile")
            )
            fail(missing, f"required with {given}")
        if certfile is not None and keyfile is not None:
            server_tls_context(certfile, keyfile)  # a mistake is a load error, not a failed handshake later

    @property
    def per_client(self) -> int:
        """:attr:`max_connections_per_client`, resolved."""
        return self.max_connections_per_client or 1

    @property
    def first_byte(self) -> float:
        """:attr:`first_byte_timeout`, resolved."""
        return self.first_byte_timeout or self.header_timeout

    @property
    def tls(self) -> bool:
        """Whether ``serve`` terminates TLS."""
        return self.ssl_certfile is not None

    @classmethod
    def from_config(cls, value: object) -> ServerLimits:
        """Build from the ``server:`` mapping (errors are relative to it)."""
        config: dict[str, Any] = dict(expect_mapping(value, ""))
        reject_unknown(config, [field.name for field in fields(cls)], "")
        return cls(**config)


def server_tls_context(
    certfile: str, keyfile: str, alpn: tuple[str, ...] = ("h2", "http/1.1")
) -> ssl.SSLContext:
    """The server TLS context of ``serve``: the certificate and key, TLS 1.2 or newer, ``alpn`` offered.

    Raises:
        ConfigError: at ``ssl_certfile`` or ``ssl_keyfile`` when a file cannot be read, at
            ``ssl_certfile`` when the two do not make a certificate and its key.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for where, path in (("ssl_certfile", certfile), ("ssl_keyfile", keyfile)):
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            fail(where, f"cannot read {path!r} ({error.strerror or 'unreadable'})")
    try:
        context.load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError):
        fail(
            "ssl_certfile",
            f"{certfile!r} and {keyfile!r} are not a PEM certificate and its (unencrypted) private key",
        )
    context.set_alpn_protocols(list(alpn))
    return context
