"""The built-in plugins: ``basic-auth``, ``consumer-restriction`` and ``limit-count``, ordinary plugins of
the pipeline.

Each plugin is an immutable configuration object (what the user wrote) that compiles, once per gateway,
into the object whose phase methods run (see :mod:`consumer_auth.sansio.plugin`). All are registered
under their names here, as a user plugin is with :func:`~consumer_auth.register_plugin`.
"""

from __future__ import annotations

from consumer_auth.sansio.plugin import Plugin, Profile, plugins_from_config, register_plugin

from .basic_auth import BasicAuthPlugin
from .consumer_restriction import ConsumerRestrictionPlugin
from .limit_count import LimitCountPlugin

__all__ = [
    "BasicAuthPlugin",
    "ConsumerRestrictionPlugin",
    "LimitCountPlugin",
    "Plugin",
    "Profile",
    "plugins_from_config",
]

register_plugin(BasicAuthPlugin)
register_plugin(ConsumerRestrictionPlugin)
register_plugin(LimitCountPlugin)
