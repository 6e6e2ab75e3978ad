"""Consumers, their basic-auth credentials, their groups, and the index the gateway looks them up in.

This module is long because a consumer, its credential, its group and the index that joins them are
checked together (a dangling ``group_id`` or a login two consumers share is found where they meet).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

from consumer_auth.errors import ConfigError

from ._validate import describe, expect_mapping, expect_str, fail
from .passwords import PasswordVerifier, PlaintextPassword, verifier_from_hash

__all__ = [
    "AnonymousConsumer",
    "BasicAuthCredential",
    "Consumer",
    "ConsumerGroup",
    "ConsumerIndex",
    "ConsumerPlugin",
    "check_group_id",
    "groups_by_id",
]


class ConsumerPlugin(Protocol):
    """A plugin a consumer carries (a :class:`~consumer_auth.Plugin`; seen here only by its shape)."""

    @property
    def name(self) -> str:
        """The plugin's name: it replaces the route's plugin of that name for this consumer."""

    def phases(self) -> tuple[str, ...]:
        """The phases it takes part in."""


_CONSUMER_NAME = re.compile(r"[A-Za-z0-9_\-]+")
_GROUP_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def check_group_id(value: object, path: str = "id") -> str:
    """A consumer group id, as APISIX takes it: 1 to 64 letters, digits, ``_``, ``-`` and ``.``.

    Raises:
        ConfigError: at ``path``.
    """
    ident = expect_str(value, path)
    if not _GROUP_ID.fullmatch(ident):
        fail(path, f"expected 1 to 64 letters, digits, '_', '-' or '.', got {describe(ident)}")
    return ident


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
            of the same name as a route's (or its group's) replaces it for this consumer (SPEC §9). Only
            their ``access`` and ``response`` phases run: the consumer is known only after authentication.
        group_id: The id of the :class:`ConsumerGroup` this consumer belongs to, if any; the gateway
            must be given that group (a dangling id is a ``ConfigError`` at ``consumers[i].group_id``).

    Example:
        >>> alex = Consumer("alex", password="123456")
        >>> [c.username for c in alex.credentials]
        ['alex']

    The object also follows Starlette's user conventions (``is_authenticated``, ``display_name``,
    ``identity``), so it can sit in ``request.user``. A request let through as a route's
    ``anonymous_consumer`` carries an :class:`AnonymousConsumer` instead, whose ``is_authenticated`` is
    false.
    """

    __slots__ = ("credentials", "desc", "group_id", "labels", "plugins", "username")

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
        group_id: str | None = None,
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
        self.labels: Mapping[str, str] = _labels(labels)
        self.desc = None if desc is None else expect_str(desc, "desc", nonempty=False)
        self.plugins: tuple[ConsumerPlugin, ...] = _consumer_plugins(plugins)
        self.group_id = None if group_id is None else check_group_id(group_id, "group_id")

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
        group = f", group_id={self.group_id!r}" if self.group_id is not None else ""
        return f"Consumer({self.username!r}, credentials={len(self.credentials)}{group})"


class ConsumerGroup:
    """Plugins and labels shared by several consumers (APISIX's consumer group).

    A consumer joins a group with ``group_id``. The group's plugins apply to every request of its
    consumers, with SPEC §9's precedence: a plugin of the same name on the consumer replaces the
    group's, and the group's replaces the route's and the service's, wholesale. As on a consumer, a
    group's plugins run after authentication (their ``access`` and ``response`` phases), so an
    authenticating plugin such as ``basic-auth`` is refused.

    Args:
        id: How consumers name the group: 1 to 64 letters, digits, ``_``, ``-`` and ``.``.
        desc: A description, for people.
        labels: Free labels (strings).
        plugins: The plugins of the group's consumers.

    Raises:
        ConfigError: naming the field.

    Example:
        >>> from consumer_auth import ConsumerRestrictionPlugin
        >>> free = ConsumerGroup("free", plugins=[ConsumerRestrictionPlugin(blacklist=["mallory"])])
        >>> alex = Consumer("alex", password="123456", group_id="free")
        >>> alex.group_id
        'free'
    """

    __slots__ = ("desc", "id", "labels", "plugins")

    def __init__(
        self,
        id: str,  # noqa: A002 - APISIX's name for it
        *,
        desc: str | None = None,
        labels: Mapping[str, str] | None = None,
        plugins: Iterable[ConsumerPlugin] = (),
    ) -> None:
        self.id = check_group_id(id)
        self.desc = None if desc is None else expect_str(desc, "desc", nonempty=False)
        self.labels: Mapping[str, str] = _labels(labels)
        self.plugins: tuple[ConsumerPlugin, ...] = _consumer_plugins(plugins, "a consumer group's")

    def __repr__(self) -> str:
        return f"ConsumerGroup({self.id!r}, plugins={[p.name for p in self.plugins]!r})"


def _labels(labels: Mapping[str, str] | None) -> Mapping[str, str]:
    clean: dict[str, str] = {}
    for key, value in expect_mapping(labels or {}, "labels").items():
        clean[key] = expect_str(value, f"labels.{key}", nonempty=False)
    return MappingProxyType(clean)


def _consumer_plugins(
    value: Iterable[ConsumerPlugin], whose: str = "a consumer's"
) -> tuple[ConsumerPlugin, ...]:
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
                f"plugin {name!r} authenticates: {whose} plugins run after authentication",
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


def groups_by_id(consumers: Iterable[Consumer], groups: Iterable[ConsumerGroup]) -> dict[str, ConsumerGroup]:
    """The groups by id, checked: unique ids, and every consumer's ``group_id`` naming one of them.

    Raises:
        ConfigError: a duplicate id at ``consumer_groups[i].id``; a dangling ``group_id`` at
            ``consumers[i].group_id``.
    """
    found: dict[str, ConsumerGroup] = {}
    for index, group in enumerate(groups):
        if not isinstance(group, ConsumerGroup):
            raise ConfigError(f"consumer_groups[{index}]", f"expected a ConsumerGroup, got {describe(group)}")
        if group.id in found:
            raise ConfigError(f"consumer_groups[{index}].id", f"duplicate consumer group {group.id!r}")
        found[group.id] = group
    for index, consumer in enumerate(consumers):
        ident = getattr(consumer, "group_id", None)
        if ident is not None and ident not in found:
            raise ConfigError(f"consumers[{index}].group_id", f"no consumer group with id {ident!r}")
    return found


class ConsumerIndex:
    """Consumers by name, credentials by username and consumer groups by id; built once, then read-only.

    Args:
        consumers: The consumers.
        groups: The consumer groups the consumers' ``group_id`` may name.

    Raises:
        ConfigError: for a duplicate consumer name or credential username, at ``consumers[i]``; a
            duplicate group id at ``consumer_groups[i].id``; a ``group_id`` naming no group at
            ``consumers[i].group_id``.
    """

    __slots__ = ("_anonymous", "_by_login", "_by_name", "_decoy", "_groups", "rehashed")

    def __init__(self, consumers: Iterable[Consumer], groups: Iterable[ConsumerGroup] = ()) -> None:
        self._by_name: dict[str, Consumer] = {}
        self._by_login: dict[str, tuple[Consumer, BasicAuthCredential]] = {}
        consumers = list(consumers)
        self._groups = groups_by_id(consumers, groups)
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
    def groups(self) -> tuple[ConsumerGroup, ...]:
        """The consumer groups, in the order given."""
        return tuple(self._groups.values())

    def group(self, ident: str) -> ConsumerGroup | None:
        """The consumer group with this id, if any."""
        return self._groups.get(ident)

    def group_plugins(self, consumer: Consumer) -> tuple[ConsumerPlugin, ...]:
        """The plugins of ``consumer``'s group (empty when it has none, or when its group is not one of
        these: a consumer of another gateway)."""
        ident = consumer.group_id
        if ident is None:
            return ()
        group = self._groups.get(ident)
        return group.plugins if group is not None else ()

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
