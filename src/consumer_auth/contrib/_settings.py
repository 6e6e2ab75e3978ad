"""Build a gateway from a framework setting: one reading of ``CONSUMER_AUTH`` for every integration."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from consumer_auth.errors import ConfigError
from consumer_auth.gateway import Gateway
from consumer_auth.sansio._validate import describe

__all__ = ["SETTING", "gateway_from_setting", "load_gateway", "setting_kind_error", "unreachable_reason"]

SETTING = "CONSUMER_AUTH"
"""The name of the setting in Flask's ``app.config`` and Django's settings."""


def setting_kind_error(value: object, name: str = SETTING) -> ConfigError | None:
    """The error for a setting that is neither a mapping, a file path nor a :class:`Gateway`, if it is."""
    if isinstance(value, Gateway | Mapping | str | os.PathLike):
        return None
    return ConfigError(
        name, f"expected a configuration mapping, a file path or a Gateway, got {describe(value)}"
    )


def gateway_from_setting(value: object, name: str = SETTING) -> Gateway:
    """The gateway a setting describes.

    Args:
        value: A :class:`Gateway` (used as is), a mapping of the configuration schema, or the path of a
            YAML, JSON or TOML file holding one.
        name: The setting's name, for error messages.

    Raises:
        ConfigError: naming the place: ``CONSUMER_AUTH.routes[0].uri: ...`` for a mapping,
            ``gateway.yaml: routes[0].uri: ...`` for a file.
    """
    if value is None:
        raise ConfigError(name, "not set: expected a configuration mapping, a file path or a Gateway")
    kind_error = setting_kind_error(value, name)
    if kind_error is not None:
        raise kind_error
    if isinstance(value, Gateway):
        return value
    if isinstance(value, Mapping):
        try:
            return Gateway.from_dict(value)
        except ConfigError as error:
            raise error.within(name) from None
    file = Path(value)  # type: ignore[arg-type]  # str or PathLike, checked above
    try:
        return Gateway.from_file(file)
    except ConfigError as error:
        if error.path.startswith(str(file)):  # the file could not be read: the core named it already
            raise
        raise ConfigError(f"{file}: {error.path}" if error.path else str(file), error.reason) from None


def unreachable_reason(value: object, gateway: Gateway) -> str | None:
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


def load_gateway(value: object, name: str = SETTING) -> Gateway:
    """:func:`gateway_from_setting`, refusing a configuration under which the app is unreachable.

    Raises:
        ConfigError: as :func:`gateway_from_setting`, or at ``name`` for :func:`unreachable_reason`.
    """
    gateway = gateway_from_setting(value, name)
    reason = unreachable_reason(value, gateway)
    if reason is not None:
        raise ConfigError(name, reason)
    return gateway
