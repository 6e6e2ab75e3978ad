"""The one exception tree of consumer_auth.

::

    ConsumerAuthError            never raised itself; catch it to catch everything below
    ├── ConfigError              a configuration is invalid (also a ValueError)
    ├── StoreError               a consumer store cannot do what was asked (read-only, broken schema, ...)
    │   └── StoreUnavailableError    the store cannot be reached now (the gateway keeps its last snapshot)
    ├── UnsupportedAppError      ``protect`` could not tell whether an app is WSGI or ASGI (also a TypeError)
    └── UpstreamAbortedError     a proxied response broke off after it had started (also a ConnectionError)

Client mistakes (a malformed ``Authorization`` header, an unknown user) are never exceptions: they are
responses, decided by the core and sent by the adapters. So are upstream faults before a proxied response
has started (502, 504).
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConsumerAuthError",
    "StoreError",
    "StoreUnavailableError",
    "UnsupportedAppError",
    "UpstreamAbortedError",
]


class ConsumerAuthError(Exception):
    """Base class of every exception this library raises on purpose."""


class ConfigError(ConsumerAuthError, ValueError):
    """A configuration value is invalid.

    The message always starts with the exact place of the mistake, for example
    ``routes[0].plugins.basic-auth.hide_credentials: expected a boolean, got 'yes'``.
    Secret values (passwords, hashes) are never included.

    Attributes:
        path: Where the mistake is (``""`` when it concerns the whole document).
        reason: What is wrong there.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)

    def within(self, prefix: str) -> ConfigError:
        """Return the same error placed below ``prefix`` (``routes[0]`` + ``uri`` → ``routes[0].uri``)."""
        if not prefix:
            return self
        if not self.path:
            return ConfigError(prefix, self.reason)
        joiner = "" if self.path.startswith("[") else "."
        return ConfigError(f"{prefix}{joiner}{self.path}", self.reason)


class StoreError(ConsumerAuthError):
    """A consumer store cannot do what was asked.

    The message says what went wrong in words safe to log: never a password, a hash or a connection
    password.
    """


class StoreUnavailableError(StoreError):
    """A consumer store cannot be reached right now (connection refused, reset, timed out).

    A gateway attached to the store keeps answering from its last snapshot and retries with backoff.
    """


class UnsupportedAppError(ConsumerAuthError, TypeError):
    """An application passed to :func:`consumer_auth.protect` is neither WSGI nor ASGI."""


class UpstreamAbortedError(ConsumerAuthError, ConnectionError):
    """The upstream failed (reset, timed out) after the proxied response had started.

    The status line has gone to the client, so a 502 is no longer possible; the forwarder raises this to
    the server so that it aborts the client's connection instead of ending the body as if it were
    complete. It is logged (one line, no secrets) before it is raised; ``consumer-auth serve`` does not
    log it a second time.
    """
