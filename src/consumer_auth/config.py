"""Read the configuration schema (SPEC §6) from a mapping or a YAML, JSON or TOML file.

The loaders only check the *shape* (known keys, lists, mappings) and hand the values to the public
constructors (:class:`Consumer`, :class:`Route`, ...), which check the values. Every error is a
:class:`ConfigError` naming its exact place, such as ``routes[0].plugins.basic-auth.hide_credentials``.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ._limits import ServerLimits
from .errors import ConfigError
from .failures import FailureStore, store_from_config
from .sansio._trust import TrustedProxies
from .sansio._validate import (
    expect_choice,
    expect_int,
    expect_list,
    expect_mapping,
    expect_number,
    expect_str_list,
    reject_unknown,
)
from .sansio.admission import VerificationLimits
from .sansio.consumers import BasicAuthCredential, Consumer, ConsumerGroup, groups_by_id
from .sansio.plugins import Plugin, Profile, plugins_from_config
from .sansio.routing import PathMatching, Route, Service

__all__ = ["GatewayConfig", "gateway_options", "load_file", "parse_config"]

T = TypeVar("T")

_TOP = (
    "profile",
    "unmatched",
    "path_matching",
    "verification_cache",
    "trusted_proxies",
    "brute_force_store",
    "verification",
    "server",
    "consumer_groups",
    "consumers",
    "services",
    "routes",
)
_CACHE = ("max_entries", "ttl")
_CONSUMER = ("username", "desc", "labels", "plugins", "credentials", "group_id")
_GROUP = ("id", "desc", "labels", "plugins")
_CREDENTIAL = ("id", "desc", "plugins")
_CONSUMER_BASIC_AUTH = ("username", "password", "password_hash")
_SERVICE = (
    "id",
    "name",
    "desc",
    "path_prefix",
    "strip_path_prefix",
    "hosts",
    "upstream",
    "plugins",
    "max_body_bytes",
)
_ROUTE = (
    "id",
    "name",
    "desc",
    "uri",
    "uris",
    "methods",
    "host",
    "hosts",
    "priority",
    "plugins",
    "service_id",
    "upstream",
    "max_body_bytes",
    "enable_websocket",
)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """A validated configuration, ready to build a :class:`~consumer_auth.Gateway` from."""

    consumers: tuple[Consumer, ...]
    services: tuple[Service, ...]
    routes: tuple[Route, ...]
    profile: Profile
    unmatched: str
    cache_size: int = 10_000
    cache_ttl: float = 60.0
    trusted_proxies: tuple[str, ...] = ()
    brute_force_store: FailureStore | None = None
    server: ServerLimits = ServerLimits()
    """Limits of ``consumer-auth serve`` (the ``server:`` section); the gateway itself ignores them."""
    verification_limits: VerificationLimits = VerificationLimits()
    """How many slow verifications may be pending (the ``verification:`` section)."""
    path_matching: PathMatching = PathMatching()
    """The ``path_matching:`` section (``case_insensitive``)."""
    consumer_groups: tuple[ConsumerGroup, ...] = ()
    """The ``consumer_groups:`` section (consumers name theirs with ``group_id``)."""


def gateway_options(config: GatewayConfig) -> dict[str, Any]:
    """The gateway's keyword arguments a configuration gives, its consumers aside."""
    return {
        "routes": config.routes,
        "services": config.services,
        "profile": config.profile,
        "unmatched": config.unmatched,
        "cache_size": config.cache_size,
        "cache_ttl": config.cache_ttl,
        "trusted_proxies": config.trusted_proxies,
        "brute_force_store": config.brute_force_store,
        "verification_limits": config.verification_limits,
        "path_matching": config.path_matching,
    }


def _at(path: str, build: Callable[[], T]) -> T:
    try:
        return build()
    except ConfigError as error:
        raise error.within(path) from None
    except TypeError as error:  # a constructor refused an argument: report it at its place, without values
        raise ConfigError(path, f"invalid arguments ({type(error).__name__})") from None


def _items(document: Mapping[str, Any], key: str) -> list[Any]:
    value = document.get(key)
    return [] if value is None else expect_list(value, key, secret=key == "consumers")


def _basic_auth_credential(value: object, path: str, *, ident: str | None = None) -> BasicAuthCredential:
    config = expect_mapping(value, path, secret=True)
    reject_unknown(config, _CONSUMER_BASIC_AUTH, path)
    return _at(
        path,
        lambda: BasicAuthCredential(
            config.get("username"),  # type: ignore[arg-type]
            config.get("password"),
            password_hash=config.get("password_hash"),
            id=ident,
        ),
    )


def _credential_plugins(value: object, path: str, *, ident: str | None = None) -> list[BasicAuthCredential]:
    plugins = expect_mapping(value, path, secret=True)
    reject_unknown(plugins, ("basic-auth",), path)
    if "basic-auth" not in plugins:
        return []
    return [_basic_auth_credential(plugins["basic-auth"], f"{path}.basic-auth", ident=ident)]


def _consumer(value: object, path: str) -> Consumer:
    config = expect_mapping(value, path, secret=True)
    reject_unknown(config, _CONSUMER, path)
    credentials: list[BasicAuthCredential] = []
    others: tuple[Plugin, ...] = ()
    if config.get("plugins") is not None:
        where = f"{path}.plugins"
        plugins = dict(expect_mapping(config["plugins"], where, secret=True))
        if "basic-auth" in plugins:
            credentials.append(_basic_auth_credential(plugins.pop("basic-auth"), f"{where}.basic-auth"))
        others = _at(where, lambda: plugins_from_config(plugins))
    credentials_list = expect_list(config.get("credentials") or [], f"{path}.credentials", secret=True)
    for index, item in enumerate(credentials_list):
        where = f"{path}.credentials[{index}]"
        entry = expect_mapping(item, where, secret=True)
        reject_unknown(entry, _CREDENTIAL, where)
        ident = entry.get("id")
        found = _credential_plugins(entry.get("plugins") or {}, f"{where}.plugins", ident=ident)
        if not found:
            raise ConfigError(f"{where}.plugins", "expected a 'basic-auth' credential")
        credentials += found
    return _at(
        path,
        lambda: Consumer(
            config.get("username"),  # type: ignore[arg-type]
            credentials=credentials,
            labels=config.get("labels"),
            desc=config.get("desc"),
            plugins=others,
            group_id=config.get("group_id"),
        ),
    )


def _group(value: object, path: str) -> ConsumerGroup:
    config = expect_mapping(value, path)
    reject_unknown(config, _GROUP, path)
    plugins: tuple[Plugin, ...] = ()
    if config.get("plugins") is not None:
        where = f"{path}.plugins"
        raw = expect_mapping(config["plugins"], where)
        if "basic-auth" in raw:
            raise ConfigError(
                f"{where}.basic-auth", "a consumer group holds no credentials: put them on its consumers"
            )
        plugins = _at(where, lambda: plugins_from_config(raw))
    if "id" not in config:
        raise ConfigError(f"{path}.id", "required")
    return _at(
        path,
        lambda: ConsumerGroup(
            config["id"],
            desc=config.get("desc"),
            labels=config.get("labels"),
            plugins=plugins,
        ),
    )


def _fields(value: object, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The keys of a service or route, checked, with its ``plugins`` mapping built into plugin objects."""
    config = dict(expect_mapping(value, path))
    reject_unknown(config, allowed, path)
    raw_plugins = config.get("plugins")
    if raw_plugins is not None:
        config["plugins"] = _at(
            f"{path}.plugins", lambda: plugins_from_config(expect_mapping(raw_plugins, ""))
        )
    return config


def _service(value: object, path: str) -> Service:
    config = _fields(value, path, _SERVICE)
    if "id" not in config and "name" in config:
        config["id"] = config["name"]
    if "id" not in config:
        raise ConfigError(f"{path}.id", "required (or 'name')")
    return _at(path, lambda: Service(**config))


def _route(value: object, path: str) -> Route:
    config = _fields(value, path, _ROUTE)
    if "host" in config:
        if "hosts" in config:
            raise ConfigError(f"{path}.host", "give 'host' or 'hosts', not both")
        config["hosts"] = [config.pop("host")]
    return _at(path, lambda: Route(**config))


def parse_config(document: object) -> GatewayConfig:
    """Validate a configuration mapping (SPEC §6) into immutable objects.

    Raises:
        ConfigError: naming the exact place of the first mistake; secrets are never in the message.
    """
    top = expect_mapping(document, "")
    reject_unknown(top, _TOP, "")
    profile = Profile(expect_choice(top.get("profile", "classic"), "profile", [p.value for p in Profile]))
    unmatched = expect_choice(top.get("unmatched", "reject"), "unmatched", ("reject", "pass"))
    raw_matching = top.get("path_matching")
    matching = (
        _at("path_matching", lambda: PathMatching.from_config(raw_matching))
        if raw_matching is not None
        else PathMatching()
    )
    trusted = expect_str_list(top.get("trusted_proxies") or [], "trusted_proxies", nonempty=False)
    TrustedProxies(trusted)  # checked here, so that a mistake is reported before anything is built
    raw_store = top.get("brute_force_store")
    store = _at("brute_force_store", lambda: store_from_config(raw_store)) if raw_store is not None else None
    raw_server = top.get("server")
    server = (
        _at("server", lambda: ServerLimits.from_config(raw_server))
        if raw_server is not None
        else ServerLimits()
    )
    groups = tuple(
        _group(item, f"consumer_groups[{i}]") for i, item in enumerate(_items(top, "consumer_groups"))
    )
    consumers = tuple(_consumer(item, f"consumers[{i}]") for i, item in enumerate(_items(top, "consumers")))
    groups_by_id(consumers, groups)  # a duplicate group id or a dangling group_id, reported at load
    services = tuple(_service(item, f"services[{i}]") for i, item in enumerate(_items(top, "services")))
    routes = tuple(_route(item, f"routes[{i}]") for i, item in enumerate(_items(top, "routes")))
    raw_verification = top.get("verification")
    verification = (
        _at("verification", lambda: VerificationLimits.from_config(raw_verification))
        if raw_verification is not None
        else VerificationLimits()
    )
    cache = expect_mapping(top.get("verification_cache") or {}, "verification_cache")
    reject_unknown(cache, _CACHE, "verification_cache")
    size = expect_int(cache.get("max_entries", 10_000), "verification_cache.max_entries", minimum=0)
    ttl = expect_number(cache.get("ttl", 60.0), "verification_cache.ttl")
    return GatewayConfig(
        consumers,
        services,
        routes,
        profile,
        unmatched,
        size,
        ttl,
        trusted,
        store,
        server,
        verification_limits=verification,
        path_matching=matching,
        consumer_groups=groups,
    )


def load_file(path: str | Path) -> object:
    """Read a YAML (``.yaml``/``.yml``), JSON or TOML file into a mapping, without validating it.

    Raises:
        ConfigError: the file cannot be read or parsed (the message names the file and the line when known).
    """
    file = Path(path)
    suffix = file.suffix.lower()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(
            str(file), f"cannot read the file ({error.strerror or type(error).__name__})"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(str(file), "the file is not UTF-8 text") from None
    try:
        if suffix in (".yaml", ".yml"):
            return yaml.safe_load(text)
        if suffix == ".json":
            return json.loads(text)
        if suffix == ".toml":
            return tomllib.loads(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(str(file), f"invalid YAML{where}") from None
    except json.JSONDecodeError as error:
        raise ConfigError(str(file), f"invalid JSON at line {error.lineno}, column {error.colno}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(str(file), f"invalid TOML: {error}") from None
    raise ConfigError(str(file), "expected a .yaml, .yml, .json or .toml file")
