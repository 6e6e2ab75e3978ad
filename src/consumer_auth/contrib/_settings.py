"""Build a gateway from a framework setting: one reading of ``CONSUMER_AUTH`` for every integration."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consumer_auth.config import GatewayConfig, parse_config
from consumer_auth.errors import ConfigError, StoreError
from consumer_auth.gateway import Gateway
from consumer_auth.sansio._validate import describe, expect_number, reject_unknown

if TYPE_CHECKING:
    from consumer_auth.store import Store

__all__ = [
    "SETTING",
    "StoreFactory",
    "gateway_from_setting",
    "load_gateway",
    "setting_kind_error",
    "split_store",
    "unreachable_reason",
]

SETTING = "CONSUMER_AUTH"
"""The name of the setting in Flask's ``app.config`` and Django's settings."""

StoreFactory = Callable[[object, str], "Store"]
"""Opens a store named by its type in a setting (``"django"``): ``factory(value, place) -> Store``."""

_URL_STORE = ("url", "poll_interval")


def split_store(
    value: Mapping[str, Any], name: str = SETTING, stores: Mapping[str, StoreFactory] | None = None
) -> tuple[dict[str, Any], Store | None, float | None]:
    """Split a mapping setting into its configuration and the store its ``store`` key names.

    ``store`` is a type that the integration provides (``"django"``, or ``{"type": "django", ...}``),
    a store URL (``"sqlite:///consumers.db"``, ``"postgresql://host/db"``, a YAML/JSON/TOML file) or
    ``{"url": URL, "poll_interval": SECONDS}``. The store is opened (nothing is read yet).

    Returns:
        The configuration without ``store``, the store (``None`` without one), and the seconds between
        revision checks the setting asks for (``None``: the store's default).

    Raises:
        ConfigError: at ``<name>.store...``; a URL is never repeated in the message.
    """
    config = {key: item for key, item in value.items() if key != "store"}
    raw = value.get("store")
    if raw is None:
        return config, None, None
    where = f"{name}.store"
    known = stores or {}
    kind = raw.get("type") if isinstance(raw, Mapping) else raw
    if isinstance(kind, str) and kind in known:
        return config, known[kind](raw, where), None
    expected = " or ".join([*(repr(k) for k in known), "a store URL"])
    if isinstance(raw, Mapping):
        if "type" in raw:
            raise ConfigError(f"{where}.type", f"expected {' or '.join(map(repr, known)) or 'no type'}")
        reject_unknown(raw, _URL_STORE, where)
        url, poll = raw.get("url"), raw.get("poll_interval")
        where_url = f"{where}.url"
        poll_interval = None if poll is None else expect_number(poll, f"{where}.poll_interval")
    elif isinstance(raw, str):
        url, where_url, poll_interval = raw, where, None
    else:
        raise ConfigError(where, f"expected {expected}, got {describe(raw)}")
    if not isinstance(url, str):
        raise ConfigError(where_url, f"expected {expected}")
    from consumer_auth.store import open_store

    try:
        return config, open_store(url), poll_interval
    except ConfigError as error:  # at ``store``: the URL names no store this setting knows
        types = "".join(f" or {kind!r}" for kind in known)
        raise ConfigError(where_url, f"{error.reason}{types}") from None
    except StoreError as error:
        types = "".join(f" or {kind!r}" for kind in known)
        raise ConfigError(where_url, f"{error}{types}") from None


def setting_kind_error(value: object, name: str = SETTING) -> ConfigError | None:
    """The error for a setting that is neither a mapping, a file path nor a :class:`Gateway`, if it is."""
    if isinstance(value, Gateway | Mapping | str | os.PathLike):
        return None
    return ConfigError(
        name, f"expected a configuration mapping, a file path or a Gateway, got {describe(value)}"
    )


def gateway_from_setting(
    value: object, name: str = SETTING, stores: Mapping[str, StoreFactory] | None = None
) -> Gateway:
    """The gateway a setting describes.

    Args:
        value: A :class:`Gateway` (used as is), a mapping of the configuration schema, or the path of a
            YAML, JSON or TOML file holding one. A mapping may name a ``store`` that the consumers come
            from, kept current (see :func:`split_store`).
        name: The setting's name, for error messages.
        stores: The store types the integration provides, by name.

    Raises:
        ConfigError: naming the place: ``CONSUMER_AUTH.routes[0].uri: ...`` for a mapping,
            ``gateway.yaml: routes[0].uri: ...`` for a file.
        StoreError: the store cannot be read now.
    """
    if value is None:
        raise ConfigError(name, "not set: expected a configuration mapping, a file path or a Gateway")
    kind_error = setting_kind_error(value, name)
    if kind_error is not None:
        raise kind_error
    if isinstance(value, Gateway):
        return value
    if isinstance(value, Mapping):
        config, store, poll_interval = split_store(value, name, stores)
        try:
            parsed = parse_config(config)
        except ConfigError as error:
            if store is not None:
                store.close()
            raise error.within(name) from None
        try:
            return Gateway.from_config(parsed, store=store, poll_interval=poll_interval)
        except ConfigError as error:
            if store is not None:
                store.close()
            raise error.within(name) from None
    file = Path(value)  # type: ignore[arg-type]  # str or PathLike, checked above
    try:
        return Gateway.from_file(file)
    except ConfigError as error:
        if error.path.startswith(str(file)):  # the file could not be read: the core named it already
            raise
        raise ConfigError(f"{file}: {error.path}" if error.path else str(file), error.reason) from None


def unreachable_reason(value: object, gateway: Gateway | GatewayConfig) -> str | None:
    """Why an app behind the gateway a setting describes could serve nothing at all, if it could not.

    A configuration without routes that rejects unmatched requests answers every request 404: always a
    mistake in an integration, where per-view guards need requests to reach the app. A :class:`Gateway`
    object is taken as built on purpose (its routes may come later, with ``replace_routes``).
    """
    if isinstance(value, Gateway) or gateway.routes or gateway.unmatched == "pass":
        return None
    return (
        "no routes, and unmatched requests are rejected: every request would be answered "
        "404 Route Not Found (add routes, or set 'unmatched: pass' to guard views one by one)"
    )


def load_gateway(
    value: object, name: str = SETTING, stores: Mapping[str, StoreFactory] | None = None
) -> Gateway:
    """:func:`gateway_from_setting`, refusing a configuration under which the app is unreachable.

    Raises:
        ConfigError: as :func:`gateway_from_setting`, or at ``name`` for :func:`unreachable_reason`.
        StoreError: the store cannot be read now.
    """
    gateway = gateway_from_setting(value, name, stores)
    reason = unreachable_reason(value, gateway)
    if reason is not None:
        gateway.close()
        raise ConfigError(name, reason)
    return gateway
