"""System checks, run by ``manage.py check`` (and before ``runserver``, ``migrate``, ...).

Each problem has a stable id:

=====================  ========================================================================
``consumer_auth.E001``  ``CONSUMER_AUTH`` is not set.
``consumer_auth.E002``  ``CONSUMER_AUTH`` is not a mapping, a file path or a ``Gateway``.
``consumer_auth.E003``  the configuration is invalid (the message names the exact place).
``consumer_auth.E004``  no routes while unmatched requests are rejected: every request would get 404.
``consumer_auth.E005``  ``ConsumerAuthMiddleware`` is not in ``MIDDLEWARE``: the routes guard nothing.
``consumer_auth.E010``  ``CONSUMER_AUTH["store"]`` is invalid (an unknown type or option, a database
                        alias not in ``DATABASES``, a bad URL, ``consumers`` given beside a store).
``consumer_auth.E011``  the ``"django"`` store cannot be read: the database does not answer, or what it
                        holds is invalid (the message names the resource). A database check, run
                        by ``migrate`` and ``check --database default``.
=====================  ========================================================================

With a store, the checks validate the setting without reading the store (only E011 reads it). Missing
tables are not a check message: ``migrate`` runs the database checks before it creates them
(``runserver`` lists unapplied migrations, and a gateway refuses to start saying "run manage.py migrate").
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error
from django.utils.module_loading import import_string

from consumer_auth.config import parse_config
from consumer_auth.contrib._settings import (
    SETTING,
    gateway_from_setting,
    setting_kind_error,
    split_store,
    unreachable_reason,
)
from consumer_auth.errors import ConfigError, StoreError

from .conf import STORES

__all__ = ["check_database", "check_settings", "warn_if_incomplete"]

_MIDDLEWARE = "consumer_auth.contrib.django.middleware.ConsumerAuthMiddleware"
_APP = "consumer_auth.contrib.django"
_warned: set[str] = set()


def warn_if_incomplete(*, middleware: bool = True) -> None:
    """Warn (once per process, :class:`RuntimeWarning`) when ``CONSUMER_AUTH`` is set but the setup is not
    complete: the app missing from ``INSTALLED_APPS`` (then ``manage.py check`` checks nothing) or, with
    ``middleware``, the middleware missing from ``MIDDLEWARE`` (then the routes guard nothing).

    The system checks only run when the app is installed; the middleware and ``@consumer_required``
    call this, so a setup missing one of them still says so (at start-up, or when views are imported).
    """
    if not settings.configured or not hasattr(settings, SETTING):
        return
    problems = []
    if middleware and not _middleware_installed():
        problems.append(
            f"{SETTING} is set but {_MIDDLEWARE} is not in MIDDLEWARE: the gateway's routes guard "
            "nothing (only views with @consumer_required ask for credentials)"
        )
    if not _app_installed():
        problems.append(
            f"{SETTING} is set but {_APP!r} is not in INSTALLED_APPS: `manage.py check` cannot report "
            "mistakes in the setting (add the app)"
        )
    for problem in problems:
        if problem not in _warned:
            _warned.add(problem)
            warnings.warn(problem, RuntimeWarning, stacklevel=3)


def _app_installed() -> bool:
    from django.apps import apps

    if apps.ready:
        return apps.is_installed(_APP)
    entries = getattr(settings, "INSTALLED_APPS", None) or ()
    return any(entry == _APP or entry.startswith(_APP + ".") for entry in entries)


def check_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """Check ``settings.CONSUMER_AUTH`` and ``MIDDLEWARE``; see the module for the ids."""
    errors: list[CheckMessage] = []
    if not _middleware_installed():
        errors.append(
            Error(
                f"{_MIDDLEWARE} is not in MIDDLEWARE: the gateway's routes guard nothing.",
                hint="Add it near the top of MIDDLEWARE, after SecurityMiddleware.",
                id="consumer_auth.E005",
            )
        )
    if not hasattr(settings, SETTING):
        errors.append(
            Error(
                f"{SETTING} is not set.",
                hint="Set it to a configuration mapping, the path of a YAML, JSON or TOML file, or a Gateway.",
                id="consumer_auth.E001",
            )
        )
        return errors
    value = getattr(settings, SETTING)
    kind_error = setting_kind_error(value)
    if kind_error is not None:
        errors.append(Error(str(kind_error), id="consumer_auth.E002"))
        return errors
    if isinstance(value, Mapping) and "store" in value:
        return errors + _check_store_setting(value)
    try:
        gateway = gateway_from_setting(value)
    except ConfigError as error:
        errors.append(Error(str(error), id="consumer_auth.E003"))
        return errors
    reason = unreachable_reason(value, gateway)
    if reason is not None:
        errors.append(Error(f"{SETTING}: {reason}.", id="consumer_auth.E004"))
    return errors


def _check_store_setting(value: Mapping[str, Any]) -> list[CheckMessage]:
    try:
        config, store, _ = split_store(value, SETTING, STORES)
    except ConfigError as error:
        return [Error(str(error), id="consumer_auth.E010")]
    if store is not None:
        store.close()
    for key, what in (("consumers", "consumers"), ("consumer_groups", "consumer groups")):
        if config.get(key):
            return [
                Error(
                    f"{SETTING}.{key}: the {what} come from the store: remove them from the setting.",
                    id="consumer_auth.E010",
                )
            ]
    try:
        parsed = parse_config(config)
    except ConfigError as error:
        return [Error(str(error.within(SETTING)), id="consumer_auth.E003")]
    reason = unreachable_reason(value, parsed)
    if reason is not None:
        return [Error(f"{SETTING}: {reason}.", id="consumer_auth.E004")]
    return []


def check_database(
    app_configs: Sequence[AppConfig] | None = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """With ``"store": "django"``: can the store's tables be read? (E011; a ``database`` check)."""
    value = getattr(settings, SETTING, None)
    if not databases or not isinstance(value, Mapping) or "store" not in value:
        return []
    try:
        _, store, _ = split_store(value, SETTING, STORES)
    except ConfigError:
        return []  # E010 says it
    from .store import DjangoStore

    if not isinstance(store, DjangoStore):
        if store is not None:
            store.close()
        return []
    try:
        if store.alias not in databases:
            return []
        if not store.tables_exist():
            return []  # not migrated yet: this may be migrate itself, which runs these checks first
        store.load()
    except (StoreError, ConfigError) as error:
        return [
            Error(
                f"{SETTING}.store: cannot read the consumers from database {store.alias!r}: {error}",
                hint="Run manage.py migrate; check the database settings.",
                id="consumer_auth.E011",
            )
        ]
    finally:
        store.close()
    return []


def _middleware_installed() -> bool:
    # Resolved by its dotted path, as Django resolves MIDDLEWARE: the middleware module imports this one.
    middleware_class = import_string(_MIDDLEWARE)
    for path in getattr(settings, "MIDDLEWARE", None) or ():
        if path == _MIDDLEWARE:
            return True
        try:
            found = import_string(path)
        except ImportError:
            continue  # Django's own checks report broken entries
        if isinstance(found, type) and issubclass(found, middleware_class):
            return True
    return False
