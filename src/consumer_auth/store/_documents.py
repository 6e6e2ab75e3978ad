"""Stored documents ⇄ validated objects: one resource at a time on write, everything on read.

Documents have the shape of the configuration schema (SPEC §6), one resource each, as in APISIX's
Admin API: a consumer (``username``, ``desc``, ``labels``, ``plugins``, ``group_id``), a credential (``id``,
``desc``, ``plugins.basic-auth``), a consumer group (``id``, ``desc``, ``labels``, ``plugins``), a service, a
route. Clear passwords are replaced by argon2id hashes before a
document is stored, and neither ever leaves through :func:`redact`.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from consumer_auth.config import GatewayConfig, parse_config
from consumer_auth.errors import ConfigError
from consumer_auth.sansio._validate import describe, expect_mapping, fail
from consumer_auth.sansio.consumers import Consumer, ConsumerIndex
from consumer_auth.sansio.gateway import check_consumers, compile_routes
from consumer_auth.sansio.passwords import hash_password
from consumer_auth.sansio.plugins import Profile

__all__ = [
    "ConsumerCache",
    "assemble",
    "broken_consumers",
    "by_kind",
    "group_of",
    "in_use",
    "prepare",
    "redact",
    "split_credential_key",
    "without_consumers",
]

_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_SECRETS = ("password", "password_hash")
_PLACE = re.compile(r"(consumer_groups|consumers|routes|services)\[(\d+)\](?:\.credentials\[(\d+)\])?")

Rows = Sequence[tuple[str, str]]


def check_id(value: str, what: str) -> str:
    """An APISIX-style id: 1-64 letters, digits, ``_``, ``-`` or ``.``."""
    if not _ID.fullmatch(value):
        fail(what, f"expected 1-64 letters, digits, '_', '-' or '.', got {describe(value)}")
    return value


def split_credential_key(key: str) -> tuple[str, str]:
    """``"alex/cred-1"`` → ``("alex", "cred-1")``."""
    consumer, _, ident = key.partition("/")
    return consumer, ident


def _relative(error: ConfigError, prefix: str) -> ConfigError:
    path = error.path
    if path == prefix:
        return ConfigError("", error.reason)
    if path.startswith(prefix + "."):
        return ConfigError(path[len(prefix) + 1 :], error.reason)
    return error


def _parse_one(document: Mapping[str, Any], prefix: str) -> GatewayConfig:
    try:
        return parse_config(document)
    except ConfigError as error:
        raise _relative(error, prefix) from None


def _consumer_config(document: Mapping[str, Any]) -> GatewayConfig:
    """One consumer's document as a configuration: its ``group_id`` (checked here, against its form) is
    given a stand-in group, since whether the group exists is a question for the whole store."""
    ident = document.get("group_id")
    groups = [{"id": ident}] if isinstance(ident, str) and _ID.fullmatch(ident) else []
    return parse_config({"consumer_groups": groups, "consumers": [document]})


def _same(document: dict[str, Any], field: str, expected: str) -> None:
    given = document.get(field)
    if given is not None and given != expected:
        fail(field, f"expected {expected!r} (as in the path), got {describe(given)}")
    document[field] = expected


def _seal(plugins: object) -> Any:
    """A copy of a ``plugins`` mapping whose basic-auth password is replaced by its argon2id hash."""
    if not isinstance(plugins, Mapping) or not isinstance(plugins.get("basic-auth"), Mapping):
        return plugins
    sealed = copy.deepcopy(dict(plugins))
    basic = dict(sealed["basic-auth"])
    password = basic.pop("password", None)
    if password is not None:
        basic["password_hash"] = hash_password(password)
    sealed["basic-auth"] = basic
    return sealed


MAX_CONSUMER_NAME = 128
"""Longest consumer name a store keeps (a credential's key, ``name/id``, must fit in 200 characters)."""


def _check_text(text: str, path: str, *, nul: bool = False) -> None:
    """Text every store can keep: valid Unicode (no lone surrogate) and, unless ``nul``, no NUL."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        fail(path, "expected valid Unicode text, got a lone surrogate")
    if not nul and "\x00" in text:
        fail(path, "expected text without NUL characters")


def _check_storable(value: object, path: str) -> None:
    """Every key and string of a document, checked with :func:`_check_text` (errors at their place).

    A clear password may hold a NUL: it is stored as its hash.
    """
    if isinstance(value, str):
        _check_text(value, path, nul=path.endswith("basic-auth.password"))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                continue  # refused with its place by the schema checks
            try:
                key.encode("utf-8")
            except UnicodeEncodeError:
                fail(
                    f"{path}.<key>" if path else "<key>", "expected valid Unicode text, got a lone surrogate"
                )
            where = f"{path}.{key}" if path else key
            _check_text(key, where)
            _check_storable(item, where)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_storable(item, f"{path}[{index}]")


def prepare(kind: str, key: str, document: object) -> dict[str, Any]:
    """Validate one resource as a client sent it; return the document to store.

    The key in the path wins: a ``username``/``id`` in the body must match it. Clear passwords become
    argon2id hashes. Cross-resource rules (unique credential usernames, existing services) are the
    store's to check against everything else it holds.

    Raises:
        ConfigError: relative to the document (``plugins.basic-auth.password: ...``).
    """
    body = dict(expect_mapping(document, ""))
    _check_storable(body, "")  # first: later messages may quote a value
    if kind == "consumers":
        _check_text(key, "username")
        if len(key) > MAX_CONSUMER_NAME:
            fail("username", f"expected at most {MAX_CONSUMER_NAME} characters, got {len(key)}")
        _same(body, "username", key)
        if "credentials" in body:
            fail("credentials", "add credentials with /apisix/admin/consumers/{username}/credentials/{id}")
        try:
            _consumer_config(body)
        except ConfigError as error:
            raise _relative(error, "consumers[0]") from None
    elif kind == "credentials":
        consumer, ident = split_credential_key(key)
        check_id(ident, "id")
        _same(body, "id", ident)
        _parse_one(
            {"consumers": [{"username": consumer, "credentials": [body]}]}, "consumers[0].credentials[0]"
        )
    elif kind in ("routes", "services", "consumer_groups"):
        check_id(key, "id")
        _same(body, "id", key)
        _parse_one({kind: [body]}, f"{kind}[0]")
    else:
        raise ValueError(f"unknown kind {kind!r}")
    if "plugins" in body and kind in ("consumers", "credentials"):
        body["plugins"] = _seal(body["plugins"])
    return body


class ConsumerCache:
    """The consumers built by the last :func:`assemble`, by the exact stored texts they came from.

    A reload then decodes and validates only the consumers whose documents (or credentials) changed:
    its cost follows the size of the change, plus one pass over the rows.
    """

    __slots__ = ("built",)

    def __init__(self) -> None:
        self.built: dict[tuple[str, ...], Consumer] = {}


def _place_of(kind: str, key: str) -> str:
    if kind == "credentials":
        owner, ident = split_credential_key(key)
        return f"consumers/{owner}/credentials/{ident}"
    return f"{kind}/{key}"


def _decode(kind: str, key: str, text: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except ValueError:
        raise ConfigError(_place_of(kind, key), "the stored document is not valid JSON") from None
    if not isinstance(document, dict):
        raise ConfigError(_place_of(kind, key), f"expected a mapping, got {describe(document)}")
    return document


def _renamed(
    error: ConfigError,
    names: Sequence[str],
    idents: Mapping[str, Sequence[str]],
    keys: Mapping[str, Sequence[str]],
) -> ConfigError:
    """The same error with positions (``consumers[3].credentials[1]``) replaced by resource names."""

    def place(match: re.Match[str]) -> str:
        kind, index, credential = match.group(1), int(match.group(2)), match.group(3)
        if kind != "consumers":
            return f"{kind}/{keys[kind][index]}"
        name = names[index]
        if credential is None:
            return f"consumers/{name}"
        return f"consumers/{name}/credentials/{idents[name][int(credential)]}"

    return ConfigError(_PLACE.sub(place, error.path), _PLACE.sub(place, error.reason))


def assemble(rows: Mapping[str, Rows], cache: ConsumerCache | None = None) -> GatewayConfig:
    """Validate everything a store holds, as one configuration.

    Args:
        rows: ``(key, JSON text)`` pairs by kind (``consumers``, ``credentials``, ``services``,
            ``routes``), in configuration order.
        cache: Consumers built last time, reused when their texts have not changed (then updated).

    Raises:
        ConfigError: naming resources by key (``consumers/bob: duplicate basic-auth username 'jack'
            (also in consumers/alex)``), never by position.
    """
    consumers = rows.get("consumers", ())
    names = [key for key, _ in consumers]
    known = set(names)
    owned: dict[str, list[tuple[str, str]]] = {}
    for key, text in rows.get("credentials", ()):
        owner, ident = split_credential_key(key)
        if owner not in known:
            raise ConfigError(f"consumers/{owner}/credentials/{ident}", f"no consumer named {owner!r}")
        owned.setdefault(owner, []).append((ident, text))
    idents = {name: [ident for ident, _ in texts] for name, texts in owned.items()}
    previous = cache.built if cache is not None else {}
    built: dict[tuple[str, ...], Consumer] = {}
    result: list[Consumer] = []
    for name, text in consumers:
        credentials = owned.get(name, [])
        fingerprint = (name, text, *(f"{ident}\0{body}" for ident, body in credentials))
        consumer = previous.get(fingerprint)
        if consumer is None:
            document = _decode("consumers", name, text)
            document["credentials"] = [
                _decode("credentials", f"{name}/{ident}", body) for ident, body in credentials
            ]
            try:
                consumer = _consumer_config(document).consumers[0]
            except ConfigError as error:
                raise _renamed(error, [name], idents, {}) from None
        built[fingerprint] = consumer
        result.append(consumer)
    services = rows.get("services", ())
    routes = rows.get("routes", ())
    groups = rows.get("consumer_groups", ())
    keys = {
        "services": [key for key, _ in services],
        "routes": [key for key, _ in routes],
        "consumer_groups": [key for key, _ in groups],
    }
    try:
        config = parse_config(
            {
                "consumer_groups": [_decode("consumer_groups", key, text) for key, text in groups],
                "services": [_decode("services", key, text) for key, text in services],
                "routes": [_decode("routes", key, text) for key, text in routes],
            }
        )
        index = ConsumerIndex(result, config.consumer_groups)
        check_consumers(compile_routes(config.routes, config.services, Profile.CLASSIC), index)
    except ConfigError as error:
        raise _renamed(error, names, idents, keys) from None
    if cache is not None:
        cache.built = built
    return GatewayConfig(
        tuple(result),
        config.services,
        config.routes,
        Profile.CLASSIC,
        "reject",
        consumer_groups=config.consumer_groups,
    )


def broken_consumers(rows: Mapping[str, Rows]) -> dict[str, tuple[str, ...]]:
    """The consumers that are invalid on their own (a hash an older version let through), with the
    stored texts of them and their credentials (their groups are taken as they are)."""
    credentials: dict[str, list[tuple[str, str]]] = {}
    for key, text in rows.get("credentials", ()):
        credentials.setdefault(split_credential_key(key)[0], []).append((key, text))
    broken: dict[str, tuple[str, ...]] = {}
    for name, text in rows.get("consumers", ()):
        owned = credentials.get(name, [])
        try:
            assemble(
                {
                    "consumers": [(name, text)],
                    "credentials": owned,
                    "consumer_groups": rows.get("consumer_groups", ()),
                }
            )
        except ConfigError:
            broken[name] = (text, *(body for _, body in owned))
    return broken


def without_consumers(rows: Mapping[str, Rows], consumers: Mapping[str, tuple[str, ...]]) -> dict[str, Rows]:
    """``rows`` without these consumers and their credentials, where their texts are still the same."""
    credentials: dict[str, list[str]] = {}
    for key, text in rows.get("credentials", ()):
        credentials.setdefault(split_credential_key(key)[0], []).append(text)
    drop = {
        name
        for name, text in rows.get("consumers", ())
        if consumers.get(name) == (text, *credentials.get(name, []))
    }
    return {
        "consumers": [(key, text) for key, text in rows.get("consumers", ()) if key not in drop],
        "credentials": [
            (key, text)
            for key, text in rows.get("credentials", ())
            if split_credential_key(key)[0] not in drop
        ],
        "consumer_groups": list(rows.get("consumer_groups", ())),
        "services": list(rows.get("services", ())),
        "routes": list(rows.get("routes", ())),
    }


def redact(document: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a stored document without any password or password hash, fit to show."""
    shown = copy.deepcopy(dict(document))
    plugins = shown.get("plugins")
    if isinstance(plugins, dict) and isinstance(plugins.get("basic-auth"), dict):
        plugins["basic-auth"] = {k: v for k, v in plugins["basic-auth"].items() if k not in _SECRETS}
    return shown


def group_of(text: str) -> str | None:
    """The ``group_id`` of a stored consumer document, if it has one (``None`` for unreadable text)."""
    try:
        document = json.loads(text)
    except ValueError:
        return None
    ident = document.get("group_id") if isinstance(document, dict) else None
    return ident if isinstance(ident, str) else None


def in_use(consumer: str) -> str:
    """Why a consumer group cannot be deleted, in APISIX's words."""
    return f"can not delete this consumer group, consumer [{consumer}] is still using it now"


def by_kind(rows: Iterable[tuple[str, str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Group ``(kind, key, text)`` rows by kind, keeping their order (unknown kinds are left out)."""
    grouped: dict[str, list[tuple[str, str]]] = {
        "consumers": [],
        "credentials": [],
        "consumer_groups": [],
        "services": [],
        "routes": [],
    }
    for kind, key, text in rows:
        if kind in grouped:
            grouped[kind].append((key, text))
    return grouped
