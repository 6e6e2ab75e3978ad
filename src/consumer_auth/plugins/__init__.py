"""The plugins a route or service can carry: ``basic-auth`` and ``consumer-restriction``.

Each plugin is an immutable configuration object (what the user wrote) that compiles, once per gateway,
into a check (precomputed responses, request facts in, an outcome out).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from consumer_auth.errors import ConfigError

from .basic_auth import BasicAuthPlugin, Profile
from .consumer_restriction import ConsumerRestrictionPlugin

__all__ = [
    "PLUGINS",
    "BasicAuthPlugin",
    "ConsumerRestrictionPlugin",
    "Plugin",
    "Profile",
    "plugins_from_config",
]

Plugin = BasicAuthPlugin | ConsumerRestrictionPlugin

PLUGINS: Mapping[str, type[BasicAuthPlugin] | type[ConsumerRestrictionPlugin]] = {
    BasicAuthPlugin.name: BasicAuthPlugin,
    ConsumerRestrictionPlugin.name: ConsumerRestrictionPlugin,
}


def plugins_from_config(value: Mapping[str, Any]) -> tuple[Plugin, ...]:
    """Build plugin objects from a ``plugins:`` mapping of a route or service (paths relative to it)."""
    built: list[Plugin] = []
    for name, config in value.items():
        kind = PLUGINS.get(name)
        if kind is None:
            raise ConfigError(name, f"unknown plugin (expected one of: {', '.join(sorted(PLUGINS))})")
        try:
            built.append(kind.from_config({} if config is None else config))
        except ConfigError as error:
            raise error.within(name) from None
    return tuple(built)
