"""The ``basic-auth`` plugin: read Basic credentials, find the consumer, verify the password.

This module is long because the plugin's phase, its shortcut and its brute-force orchestration share one
set of precomputed answers; the limits themselves are in ``brute_force.py``.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import TYPE_CHECKING, Any, ClassVar

from consumer_auth.errors import ConfigError
from consumer_auth.sansio._validate import (
    describe,
    expect_bool,
    expect_mapping,
    expect_str,
    fail,
    reject_unknown,
)
from consumer_auth.sansio.consumers import BasicAuthCredential, Consumer, ConsumerIndex
from consumer_auth.sansio.credentials import BasicCredentials, ParseFailure, parse_authorization
from consumer_auth.sansio.decision import Reject, RequestFacts, json_reject
from consumer_auth.sansio.failures import LOGGER as BRUTE_FORCE_LOGGER
from consumer_auth.sansio.passwords import PasswordVerifier, VerificationCache, hash_password
from consumer_auth.sansio.plugin import (
    Environment,
    Plugin,
    PluginRequest,
    Profile,
    RehashHook,
    Shortcut,
    Suspend,
)

from .brute_force import BruteForce, BruteForceCheck, client_subject

__all__ = ["Authenticated", "BasicAuthCheck", "BasicAuthPlugin", "Profile", "RehashHook", "SlowCheck"]

if TYPE_CHECKING:
    from consumer_auth.sansio.failures import FailureStore

_log = logging.getLogger("consumer_auth")

_REALM = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]{1,128}")


@dataclass(frozen=True, slots=True)
class BasicAuthPlugin(Plugin):
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
    priority: ClassVar[int] = 2520

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

    def compile(self, environment: Environment) -> BasicAuthCheck:
        """Precompute this plugin's responses for a gateway (its profile, cache and failure store)."""
        return BasicAuthCheck(self, environment)

    def check_consumers(self, consumers: ConsumerIndex) -> None:
        """``anonymous_consumer`` must name a consumer.

        Raises:
            ConfigError: at ``anonymous_consumer``.
        """
        name = self.anonymous_consumer
        if name is not None and consumers.consumer(name) is None:
            raise ConfigError("anonymous_consumer", f"no consumer named {name!r}")


Authenticated = tuple[Consumer, BasicAuthCredential | None]
Shortcut_Result = tuple[Consumer, BasicAuthCredential | None, bool]

# Keyed per process, so a memo digest cannot be tested against a guess; copied per use (the key block is
# compressed once, here).
_MEMO_HASH = blake2b(key=secrets.token_bytes(32), digest_size=16)
_MEMO_LIMIT = 4096
"""A request's consumer and the credential that verified (``None`` for the anonymous consumer): the very
tuple the consumer index holds, so that a success allocates nothing."""


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


class BasicAuthCheck(Plugin):
    """A compiled ``basic-auth`` plugin (its ``authenticate`` phase): every possible 401 is built once, here."""

    __slots__ = (
        "_anonymous",
        "_anonymous_missing",
        "_environment",
        "_invalid",
        "_memo",
        "_memo_of",
        "_missing",
        "_no_consumers",
        "_unknown",
        "_wrong",
        "brute_force",
        "hide_credentials",
    )

    name: ClassVar[str] = BasicAuthPlugin.name
    priority: ClassVar[int] = BasicAuthPlugin.priority

    def __init__(self, plugin: BasicAuthPlugin, environment: Environment | Profile) -> None:
        if isinstance(environment, Profile):
            environment = Environment(environment)
        profile = environment.profile
        self._environment = environment
        self._memo: dict[bytes, tuple[Shortcut_Result, bytes | None, str]] = {}
        self._memo_of: ConsumerIndex | None = None  # the consumer set the memo's entries are about
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

    def shortcut(self) -> Shortcut | None:
        """The common case without a :class:`PluginRequest`: no brute-force limits, no anonymous consumer."""
        if self.brute_force is not None or self._anonymous is not None:
            return None
        return self._shortcut

    def _shortcut(self, facts: RequestFacts, consumers: ConsumerIndex) -> Shortcut_Result | Reject | None:
        """A clear or ``{SHA}`` password checked here, a slow hash the cache remembers: the answer.
        Anything else (a failure to parse, an unknown username, a slow hash to run, a rehash to report):
        ``None`` before any password is verified, so that :meth:`authenticate` does it all once.

        An ``Authorization`` value that verified is remembered (by its keyed BLAKE2b digest, never in
        clear) for the consumer set in force: a client sending it again skips the parse and the
        verification. A slow hash's entry still asks the verification cache, whose TTL holds.
        """
        values = facts.authorization
        if len(values) != 1:
            return None
        memo = self._memo
        if self._memo_of is not consumers:
            memo.clear()
            self._memo_of = consumers
        hasher = _MEMO_HASH.copy()
        hasher.update(values[0].encode("utf-8", "surrogatepass"))
        digest = hasher.digest()
        remembered = memo.get(digest)
        environment = self._environment
        if remembered is not None:
            result, cache_key, login = remembered
            cache = environment.verification_cache
            if (cache_key is None or (cache is not None and cache.hit(cache_key))) and (
                environment.on_rehash is None or login in consumers.rehashed
            ):
                return result
        parsed = parse_authorization(values)
        if not isinstance(parsed, BasicCredentials):
            return None
        username, password = parsed
        found = consumers.credential(username)
        if found is None or not password:
            return None
        consumer, credential = found
        verifier = credential.verifier
        if (
            environment.on_rehash is not None
            and username not in consumers.rehashed
            and verifier.needs_rehash()
        ):
            return None
        cache_key = None
        if verifier.slow:
            cache = environment.verification_cache
            if cache is None or not cache.enabled:
                return None
            cache_key = cache.key(username, verifier, password)
            if not cache.hit(cache_key):
                return None
        elif not verifier.verify(password):
            return self._wrong
        result = (consumer, credential, self.hide_credentials)
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()  # bounded: at most this many logins are remembered at once
        memo[digest] = (result, cache_key, username)
        return result

    def authenticate(self, request: PluginRequest) -> Reject | Suspend | None:
        """Read the credentials, verify them, and set the request's consumer (or fall back, or reject)."""
        request.hide_credentials = self.hide_credentials
        consumers = request.consumers
        parsed = self.parse(request.facts.authorization, consumers)
        if isinstance(parsed, Reject):
            request.failure = parsed.reason
            return self._fallback(parsed, request)
        credentials: BasicCredentials = parsed
        guard = self.brute_force
        environment = self._environment
        store = environment.failure_store
        if guard is not None and store is not None:
            keys = guard.keys(credentials.username, request.client)
            if keys:
                return Suspend(
                    store.blocking or self.may_be_slow(credentials, consumers),
                    lambda: self._guarded(request, credentials, guard, keys, store),
                    credentials.username,
                )
        checked = self.check(credentials, consumers, environment.verification_cache, environment.on_rehash)
        if isinstance(checked, SlowCheck):
            slow = checked.run
            return Suspend(True, lambda: self._conclude(request, credentials, slow()), credentials.username)
        return self._conclude(request, credentials, checked)

    def _conclude(
        self, request: PluginRequest, credentials: BasicCredentials, checked: Reject | Authenticated
    ) -> Reject | None:
        if not isinstance(checked, Reject):
            request.consumer, request.credential = checked
            return None
        request.failure = checked.reason
        if request.log:
            request.target = self._target(credentials, request.consumers)
        return self._fallback(checked, request)

    def _fallback(self, rejection: Reject, request: PluginRequest) -> Reject | None:
        outcome = self.fallback(rejection, request.consumers)
        if isinstance(outcome, Reject):
            return outcome
        request.consumer, request.credential = outcome
        request.hide_credentials = True  # a login that did not verify never reaches the app (SPEC §8a)
        return None

    def _guarded(
        self,
        request: PluginRequest,
        credentials: BasicCredentials,
        guard: BruteForceCheck,
        keys: tuple[str, ...],
        store: FailureStore,
    ) -> Reject | None:
        """Ask the store first (a lock answers 429 before any check, cached or not), then check and count."""
        retry_after = store.retry_after(keys)
        if retry_after > 0:
            if request.log:
                request.target = self._target(credentials, request.consumers)
            return guard.reject(retry_after)
        environment = self._environment
        checked = self.check(
            credentials, request.consumers, environment.verification_cache, environment.on_rehash
        )
        if isinstance(checked, SlowCheck):
            checked = checked.run()
        if isinstance(checked, Reject):
            locked = store.add_failure(keys, guard.limits)
            if locked:
                self._log_lockout(request, credentials, guard, locked)
        return self._conclude(request, credentials, checked)

    @staticmethod
    def _target(credentials: BasicCredentials, consumers: ConsumerIndex) -> str | None:
        """The consumer whose credential username was tried, if it exists (a name from the config)."""
        found = consumers.credential(credentials.username)
        return found[0].username if found is not None else None

    def _log_lockout(
        self,
        request: PluginRequest,
        credentials: BasicCredentials,
        guard: BruteForceCheck,
        locked: tuple[str, ...],
    ) -> None:
        if not BRUTE_FORCE_LOGGER.isEnabledFor(logging.WARNING):
            return
        limits = guard.limits
        client = request.client
        for key in locked:
            by_username = ":u:" in key
            target = self._target(credentials, request.consumers) if by_username else None
            subject = (
                ("consumer " + target if target else "an unknown username")
                if by_username
                else "client " + (client_subject(client) if client is not None else "?")
            )
            BRUTE_FORCE_LOGGER.warning(
                "locked out %s for %gs after %d failed attempts within %gs",
                subject,
                limits.lockout,
                limits.max_failures,
                limits.window,
                extra={
                    "subject": "username" if by_username else "client",
                    "route": request.route_id,
                    "consumer": target,
                    "client": client,
                },
            )

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
                    return found
        elif not rehash:
            return found if verifier.verify(password) else self._wrong

        def run() -> Reject | Authenticated:
            if key is not None and cache is not None and cache.hit(key):
                return found  # a concurrent request verified it meanwhile
            if not verifier.verify(password):
                return self._wrong
            if key is not None and cache is not None:
                cache.remember(key)
            if rehash and on_rehash is not None:
                _report_rehash(on_rehash, consumers, consumer, credential, password)
            return found

        return SlowCheck(credentials.username, run)

    def fallback(self, rejection: Reject, consumers: ConsumerIndex) -> Reject | Authenticated:
        """Apply ``anonymous_consumer`` to a failure: let it through as that consumer, if configured."""
        if self._anonymous is None:
            return rejection
        consumer = consumers.anonymous(self._anonymous)
        if consumer is None:
            return self._anonymous_missing
        return (consumer, None)  # not authenticated (SPEC §8a): is_authenticated is false

    @property
    def anonymous_consumer(self) -> str | None:
        """The configured anonymous consumer's name."""
        return self._anonymous
