"""The ``basic-auth`` plugin: read Basic credentials, find the consumer, verify the password."""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from consumer_auth._validate import describe, expect_bool, expect_mapping, expect_str, fail, reject_unknown
from consumer_auth.consumers import BasicAuthCredential, Consumer, ConsumerIndex
from consumer_auth.credentials import BasicCredentials, ParseFailure, parse_authorization
from consumer_auth.decision import Reject, json_reject
from consumer_auth.errors import ConfigError
from consumer_auth.passwords import PasswordVerifier, VerificationCache, hash_password

from .brute_force import BruteForce, BruteForceCheck

__all__ = ["Authenticated", "BasicAuthCheck", "BasicAuthPlugin", "Profile", "RehashHook", "SlowCheck"]

_log = logging.getLogger("consumer_auth")

_REALM = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]{1,128}")


class Profile(enum.Enum):
    """Which APISIX generation's answers to give.

    ``CLASSIC`` (the default) gives exactly the messages of APISIX 2.x and the API7 Cloud guide; it tells
    a client whether a username exists. ``APISIX_3`` answers every credential failure with
    ``Invalid user authorization`` and a ``WWW-Authenticate`` header, revealing nothing.
    """

    CLASSIC = "classic"
    APISIX_3 = "apisix-3"


@dataclass(frozen=True, slots=True)
class BasicAuthPlugin:
    """Require HTTP Basic credentials of a consumer on a route or service.

    Args:
        hide_credentials: Remove the ``Authorization`` header before the app or upstream sees it.
        realm: The realm of ``WWW-Authenticate`` (1-128 printable ASCII characters, no ``"`` or ``\\``).
            Default: ``.`` under the classic profile, ``basic`` under ``apisix-3``.
        anonymous_consumer: A consumer name to let failed requests through as, instead of a 401.
        brute_force: Limits on failed logins (a :class:`BruteForce` or a mapping of its fields, e.g.
            ``{"max_failures": 5, "window": 60, "lockout": 300}``); off when ``None`` (the default).

    Example:
        >>> BasicAuthPlugin(hide_credentials=True)
        BasicAuthPlugin(hide_credentials=True, realm=None, anonymous_consumer=None, brute_force=None)
    """

    name: ClassVar[str] = "basic-auth"

    hide_credentials: bool = False
    realm: str | None = None
    anonymous_consumer: str | None = None
    brute_force: BruteForce | Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        expect_bool(self.hide_credentials, "hide_credentials")
        if self.realm is not None:
            expect_str(self.realm, "realm")
            if not _REALM.fullmatch(self.realm):
                fail(
                    "realm",
                    "expected 1-128 printable ASCII characters without '\"' or '\\', "
                    f"got {describe(self.realm)}",
                )
        if self.anonymous_consumer is not None:
            expect_str(self.anonymous_consumer, "anonymous_consumer")
        if self.brute_force is not None:
            try:
                limits = BruteForce.from_config(self.brute_force)
            except ConfigError as error:
                raise error.within("brute_force") from None
            object.__setattr__(self, "brute_force", limits)

    @classmethod
    def from_config(cls, value: object) -> BasicAuthPlugin:
        """Build from a configuration mapping (errors are relative to the plugin)."""
        config = expect_mapping(value, "")
        reject_unknown(config, ("hide_credentials", "realm", "anonymous_consumer", "brute_force"), "")
        return cls(**config)

    def compile(self, profile: Profile) -> BasicAuthCheck:
        """Precompute this plugin's responses for a gateway's profile."""
        return BasicAuthCheck(self, profile)


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A request's consumer: from a verified credential, or the anonymous consumer (an
    :class:`~consumer_auth.consumers.AnonymousConsumer`, ``credential`` ``None``)."""

    consumer: Consumer
    credential: BasicAuthCredential | None


RehashHook = Callable[[Consumer, BasicAuthCredential, str], None]
"""``on_rehash(consumer, credential, new_hash)``: a credential's stored form is outdated; ``new_hash`` is a
fresh argon2id hash of the password that just verified, for a store to save."""


@dataclass(frozen=True, slots=True)
class SlowCheck:
    """A password check that runs a slow hash: call ``run`` off any event loop.

    ``login`` is the username the client presented (whether or not it exists); adapters use it to run
    one check per login at a time.
    """

    login: str = field(repr=False)  # what a client typed: never shown
    run: Callable[[], Reject | Authenticated]


def _run_decoy(decoy: PasswordVerifier, password: str, answer: Reject) -> Reject:
    decoy.verify(password)
    return answer


def _report_rehash(
    hook: RehashHook,
    consumers: ConsumerIndex,
    consumer: Consumer,
    credential: BasicAuthCredential,
    password: str,
) -> None:
    if credential.username in consumers.rehashed:
        return
    consumers.rehashed.add(credential.username)
    try:
        hook(consumer, credential, hash_password(password))
    except Exception as error:  # the request already succeeded; a failing store must not fail it
        # The exception's type only: its message may hold the new hash (SQLAlchemy's errors print the
        # statement's parameters), so neither it nor a traceback carrying it is logged.
        _log.error(
            "on_rehash failed for consumer %r: %s.%s (message not logged: it may hold the new hash)",
            consumer.username,
            type(error).__module__,
            type(error).__qualname__,
        )


def _message(text: str, reason: str, *headers: tuple[str, str]) -> Reject:
    return json_reject(401, "message", text, *headers, reason=reason)


class BasicAuthCheck:
    """A compiled ``basic-auth`` plugin: every possible 401 is built once, here."""

    __slots__ = (
        "_anonymous",
        "_anonymous_missing",
        "_invalid",
        "_missing",
        "_no_consumers",
        "_unknown",
        "_wrong",
        "brute_force",
        "hide_credentials",
    )

    def __init__(self, plugin: BasicAuthPlugin, profile: Profile) -> None:
        self.hide_credentials = plugin.hide_credentials
        self._anonymous = plugin.anonymous_consumer
        limits = plugin.brute_force
        self.brute_force: BruteForceCheck | None = (
            limits.compile() if isinstance(limits, BruteForce) else None
        )  # None: the protection is off
        if profile is Profile.CLASSIC:
            challenge = ("WWW-Authenticate", f"Basic realm='{plugin.realm or '.'}'")
            self._missing = _message("Missing authorization in request", "missing_authorization", challenge)
            self._invalid = _message("Invalid authorization in request", "invalid_authorization")
            self._no_consumers = _message("Missing related consumer", "no_credentials_configured")
            self._unknown = _message("Invalid user key in authorization", "unknown_username")
            self._wrong = _message("Password is error", "wrong_password")
            self._anonymous_missing = _message("Invalid user authorization", "anonymous_consumer_missing")
        else:
            challenge = ("WWW-Authenticate", f'Basic realm="{plugin.realm or "basic"}"')
            same = "Invalid user authorization"
            self._missing = _message("Missing authorization in request", "missing_authorization", challenge)
            self._invalid = _message("Invalid authorization in request", "invalid_authorization", challenge)
            self._no_consumers = _message(same, "no_credentials_configured", challenge)
            self._unknown = _message(same, "unknown_username", challenge)
            self._wrong = _message(same, "wrong_password", challenge)
            self._anonymous_missing = _message(same, "anonymous_consumer_missing", challenge)

    def parse(self, authorization: tuple[str, ...], consumers: ConsumerIndex) -> Reject | BasicCredentials:
        """The cheap half: read the header. A :class:`Reject` here needs no password check."""
        parsed = parse_authorization(authorization)
        if parsed is ParseFailure.MISSING:
            return self._missing
        if isinstance(parsed, ParseFailure):
            return self._invalid
        if not consumers.has_credentials:
            return self._no_consumers
        return parsed

    def may_be_slow(self, credentials: BasicCredentials, consumers: ConsumerIndex) -> bool:
        """Whether :meth:`check` may run a slow hash for these credentials (the credential's own, or
        the decoy an unknown username runs)."""
        found = consumers.credential(credentials.username)
        verifier = found[1].verifier if found is not None else consumers.decoy
        return verifier is not None and verifier.slow

    def check(
        self,
        credentials: BasicCredentials,
        consumers: ConsumerIndex,
        cache: VerificationCache | None = None,
        on_rehash: RehashHook | None = None,
    ) -> Reject | Authenticated | SlowCheck:
        """Check the password, now when that is cheap, or as a :class:`SlowCheck` to run elsewhere.

        Cheap: a clear or ``{SHA}`` password, an empty password (never right), and a slow hash whose
        success ``cache`` still remembers. Unknown usernames cost as much as wrong passwords: they run
        a decoy of the same kind of hash. Only a real success is remembered in ``cache``; when
        ``on_rehash`` is given and the stored form is outdated, the first success for a credential hands it
        a fresh argon2id hash (computed in the slow check, never on the caller's thread).
        """
        password = credentials.password
        found = consumers.credential(credentials.username)
        if found is None:
            decoy = consumers.decoy
            if decoy is None or not password:
                return self._unknown
            if decoy.slow:
                return SlowCheck(credentials.username, lambda: _run_decoy(decoy, password, self._unknown))
            decoy.verify(password)
            return self._unknown
        consumer, credential = found
        if not password:
            return self._wrong
        verifier = credential.verifier
        rehash = (
            on_rehash is not None
            and credential.username not in consumers.rehashed
            and verifier.needs_rehash()
        )
        key: bytes | None = None
        if verifier.slow:
            if cache is not None and cache.enabled:
                key = cache.key(credential.username, verifier, password)
                if cache.hit(key):
                    return Authenticated(consumer, credential)
        elif not rehash:
            return Authenticated(consumer, credential) if verifier.verify(password) else self._wrong

        def run() -> Reject | Authenticated:
            if key is not None and cache is not None and cache.hit(key):
                return Authenticated(consumer, credential)  # a concurrent request verified it meanwhile
            if not verifier.verify(password):
                return self._wrong
            if key is not None and cache is not None:
                cache.remember(key)
            if rehash and on_rehash is not None:
                _report_rehash(on_rehash, consumers, consumer, credential, password)
            return Authenticated(consumer, credential)

        return SlowCheck(credentials.username, run)

    def fallback(self, rejection: Reject, consumers: ConsumerIndex) -> Reject | Authenticated:
        """Apply ``anonymous_consumer`` to a failure: let it through as that consumer's
        :class:`~consumer_auth.consumers.AnonymousConsumer`, if configured."""
        if self._anonymous is None:
            return rejection
        consumer = consumers.anonymous(self._anonymous)
        if consumer is None:
            return self._anonymous_missing
        return Authenticated(consumer, None)  # not authenticated (SPEC §8a): is_authenticated is false

    @property
    def anonymous_consumer(self) -> str | None:
        """The configured anonymous consumer's name."""
        return self._anonymous
