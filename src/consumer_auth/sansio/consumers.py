"""Consumers, their basic-auth credentials, and the index the gateway looks them up in."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

from consumer_auth.errors import ConfigError

from ._validate import describe, expect_mapping, expect_str, fail
from .passwords import PasswordVerifier, PlaintextPassword, verifier_from_hash

__all__ = ["AnonymousConsumer", "BasicAuthCredential", "Consumer", "ConsumerIndex", "ConsumerPlugin"]


class ConsumerPlugin(Protocol):
    """A plugin a consumer carries (a :class:`~consumer_auth.Plugin`; seen here only by its shape)."""

    @property
    def name(self) -> str:
        """The plugin's name: it replaces the route's plugin of that name for this consumer."""

    def phases(self) -> tuple[str, ...]:
        """The phases it takes part in."""


_CONSUMER_NAME = re.compile(r"[A-Za-z0-9_\-]+")


def check_login(value: object, path: str = "username") -> str:
    """A credential username: a non-empty string without ``:`` (RFC 7617: a client's username ends at
    the first ``:``, so such a credential could never log in). The value is not echoed: ``alex:123456``
    here is usually a password pasted into the wrong field.

    Raises:
        ConfigError: at ``path``.
    """
    login = expect_str(value, path)
    if ":" in login:
        fail(path, "must not contain ':' (RFC 7617: a client's username ends at the first ':')")
    return login


class BasicAuthCredential:
    """A basic-auth username and its password (in clear, or as a hash), owned by one consumer.

    Args:
        username: What the client logs in with. Unique across all consumers; no ``:`` (RFC 7617: it
            could never log in).
        password: The password in clear. Exactly one of ``password`` and ``password_hash`` is required.
        password_hash: A stored hash: argon2id (``consumer-auth hash-password`` writes one), bcrypt,
            ``$apr1$`` or ``{SHA}`` (from an htpasswd file); see :func:`~consumer_auth.sansio.passwords.verifier_from_hash`.
        id: Optional identifier, forwarded as ``X-Credential-Identifier``.

    Raises:
        ConfigError: naming the field, never its secret value.

    Security note: ``repr`` never shows the password or hash.
    """

    __slots__ = ("id", "username", "verifier")

    def __init__(
        self,
        username: str,
        password: str | None = None,
        *,
        password_hash: str | None = None,
        id: str | None = None,  # noqa: A002 - APISIX's name for it
    ) -> None:
        self.username = check_login(username)
        if (password is None) == (password_hash is None):
            fail("password", "exactly one of 'password' and 'password_hash' is required")
        self.verifier: PasswordVerifier
        if password is not None:
            expect_str(password, "password", secret=True)
            self.verifier = PlaintextPassword(password)
        else:
            self.verifier = verifier_from_hash(password_hash)  # type: ignore[arg-type]
        self.id = None if id is None else expect_str(id, "id")

    def __repr__(self) -> str:
        ident = f", id={self.id!r}" if self.id is not None else ""
        return f"BasicAuthCredential(username={self.username!r}{ident}, password=<hidden>)"


class Consumer:
    """A named API client, with its basic-auth credentials and labels.

    Args:
        username: The consumer's name (``alex``): letters, digits, ``_`` and ``-``.
        password: Shortcut for one credential whose username is ``login`` (default: the consumer's name).
        password_hash: Same shortcut with a stored hash instead of a clear password.
        login: The credential username for the shortcut, when it differs from the consumer's name.
        credentials: Further :class:`BasicAuthCredential` objects (several allow rotation without downtime).
        labels: Free labels; ``custom_id`` is forwarded as ``X-Consumer-Custom-ID``.
        desc: A description, for people.
        plugins: Plugins for this consumer's requests (not ``basic-auth``: its credentials are that). One
            of the same name as a route's replaces it for this consumer (SPEC §9). Only their ``access``
            and ``response`` phases run: the consumer is known only after authentication.

    Example:
        >>> alex = Consumer("alex", password="123456")
        >>> [c.username for c in alex.credentials]
        ['alex']

    The object also follows Starlette's user conventions (``is_authenticated``, ``display_name``,
    ``identity``), so it can sit in ``request.user``. A request let through as a route's
    ``anonymous_consumer`` carries an :class:`AnonymousConsumer` instead, whose ``is_authenticated`` is
    false.
    """

    __slots__ = ("credentials", "desc", "labels", "plugins", "username")

    is_authenticated = True

    def __init__(
        self,
        username: str,
        password: str | None = None,
        *,
        password_hash: str | None = None,
        login: str | None = None,
        credentials: Iterable[BasicAuthCredential] = (),
        labels: Mapping[str, str] | None = None,
        desc: str | None = None,
        plugins: Iterable[ConsumerPlugin] = (),
    ) -> None:
        expect_str(username, "username")
        if not _CONSUMER_NAME.fullmatch(username):
            fail("username", f"expected letters, digits, '_' or '-', got {describe(username)}")
        self.username = username
        owned = list(credentials)
        for index, credential in enumerate(owned):
            if not isinstance(credential, BasicAuthCredential):
                fail(
                    f"credentials[{index}]",
                    f"expected a BasicAuthCredential, got {describe(credential)}",
                )
        if password is not None or password_hash is not None:
            owned.insert(0, BasicAuthCredential(login or username, password, password_hash=password_hash))
        elif login is not None:
            fail("login", "a login needs a 'password' or 'password_hash'")
        self.credentials: tuple[BasicAuthCredential, ...] = tuple(owned)
        clean: dict[str, str] = {}
        for key, value in expect_mapping(labels or {}, "labels").items():
            clean[key] = expect_str(value, f"labels.{key}", nonempty=False)
        self.labels: Mapping[str, str] = MappingProxyType(clean)
        self.desc = None if desc is None else expect_str(desc, "desc", nonempty=False)
        self.plugins: tuple[ConsumerPlugin, ...] = _consumer_plugins(plugins)

    @property
    def custom_id(self) -> str | None:
        """``labels["custom_id"]``, forwarded as ``X-Consumer-Custom-ID``."""
        return self.labels.get("custom_id")

    @property
    def display_name(self) -> str:
        """The consumer's name (Starlette ``BaseUser`` convention)."""
        return self.username

    @property
    def identity(self) -> str:
        """The consumer's name (Starlette ``BaseUser`` convention)."""
        return self.username

    def __repr__(self) -> str:
        return f"Consumer({self.username!r}, credentials={len(self.credentials)})"


def _consumer_plugins(value: Iterable[ConsumerPlugin]) -> tuple[ConsumerPlugin, ...]:
    plugins = tuple(value)
    seen: set[str] = set()
    for index, plugin in enumerate(plugins):
        name = getattr(plugin, "name", None)
        phases = getattr(plugin, "phases", None)
        if not isinstance(name, str) or not name or not callable(phases):
            fail(f"plugins[{index}]", f"expected a plugin object, got {describe(plugin)}")
        if name in seen:
            fail(f"plugins[{index}]", f"plugin {name!r} given twice")
        if name == "basic-auth" or "authenticate" in phases():
            fail(
                f"plugins[{index}]",
                f"plugin {name!r} authenticates: a consumer's plugins run after authentication",
            )
        seen.add(name)
    return plugins


class AnonymousConsumer(Consumer):
    """A consumer a request proceeds as without having authenticated: a route's ``anonymous_consumer``.

    It has the consumer's name, labels and credentials, so identity headers and ``consumer-restriction``
    treat it as that consumer; but ``is_authenticated`` is false, Starlette's ``request.auth.scopes`` is
    empty, and every per-view guard asks it for credentials (SPEC §8a). Made by
    :meth:`ConsumerIndex.anonymous`; never built directly.
    """

    __slots__ = ()

    is_authenticated = False

    @classmethod
    def of(cls, consumer: Consumer) -> AnonymousConsumer:
        """The anonymous view of ``consumer`` (sharing its credentials and labels)."""
        anonymous = object.__new__(cls)
        for name in Consumer.__slots__:
            object.__setattr__(anonymous, name, getattr(consumer, name))
        return anonymous

    def __repr__(self) -> str:
        return f"AnonymousConsumer({self.username!r})"


def _decoy_for(verifiers: list[PasswordVerifier]) -> PasswordVerifier | None:
    """A decoy like most credentials: slow if any is slow, else of the most common kind.

    With several kinds of hashes an unknown username can only cost what one kind costs; matching the
    most common slow kind makes the fewest usernames tell apart by time.
    """
    if not verifiers:
        return None
    pool = [v for v in verifiers if v.slow] or verifiers
    kinds = Counter(type(v) for v in pool)
    common = kinds.most_common(1)[0][0]
    return next(v for v in pool if type(v) is common).decoy()


class ConsumerIndex:
    """Consumers by name and credentials by username; built once, then read-only.

    Raises:
        ConfigError: for a duplicate consumer name or credential username, at ``consumers[i]``.
    """

    __slots__ = ("_anonymous", "_by_login", "_by_name", "_decoy", "rehashed")

    def __init__(self, consumers: Iterable[Consumer]) -> None:
        self._by_name: dict[str, Consumer] = {}
        self._by_login: dict[str, tuple[Consumer, BasicAuthCredential]] = {}
        owner_index: dict[str, int] = {}
        verifiers: list[PasswordVerifier] = []
        for index, consumer in enumerate(consumers):
            if not isinstance(consumer, Consumer):
                raise ConfigError(f"consumers[{index}]", f"expected a Consumer, got {describe(consumer)}")
            if consumer.username in self._by_name:
                raise ConfigError(f"consumers[{index}].username", f"duplicate consumer {consumer.username!r}")
            self._by_name[consumer.username] = consumer
            for credential in consumer.credentials:
                if credential.username in self._by_login:
                    other = owner_index[credential.username]
                    raise ConfigError(
                        f"consumers[{index}]",
                        f"duplicate basic-auth username {credential.username!r} (also in consumers[{other}])",
                    )
                self._by_login[credential.username] = (consumer, credential)
                owner_index[credential.username] = index
                verifiers.append(credential.verifier)
        self._decoy = _decoy_for(verifiers)
        self._anonymous: dict[str, AnonymousConsumer] = {}
        self.rehashed: set[str] = set()
        """Credential usernames whose rehash was already reported for this set (see ``Gateway.on_rehash``)."""

    @property
    def has_credentials(self) -> bool:
        """Whether any consumer has a basic-auth credential at all."""
        return bool(self._by_login)

    def consumer(self, name: str) -> Consumer | None:
        """The consumer with this name, if any."""
        return self._by_name.get(name)

    def anonymous(self, name: str) -> AnonymousConsumer | None:
        """The :class:`AnonymousConsumer` of the consumer with this name, if any (one per consumer set)."""
        found = self._anonymous.get(name)
        if found is None:
            consumer = self._by_name.get(name)
            if consumer is None:
                return None
            found = self._anonymous.setdefault(name, AnonymousConsumer.of(consumer))
        return found

    def credential(self, login: str) -> tuple[Consumer, BasicAuthCredential] | None:
        """The consumer and credential that own this basic-auth username, if any."""
        return self._by_login.get(login)

    @property
    def decoy(self) -> PasswordVerifier | None:
        """A verifier of the most common slow form among the credentials, run for unknown usernames."""
        return self._decoy

    def __len__(self) -> int:
        return len(self._by_name)

    def __iter__(self) -> Any:
        return iter(self._by_name.values())
