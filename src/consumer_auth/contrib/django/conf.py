"""The lazy settings object: reads ``settings.CONSUMER_AUTH`` when first needed, builds the gateway once.

The gateway is rebuilt after ``override_settings(CONSUMER_AUTH=...)`` (Django's ``setting_changed``
signal), so tests can swap configurations; a gateway built here that followed a store stops following
it then.

A mapping setting may take its consumers from Django admin's models with ``"store": "django"`` (see
:mod:`consumer_auth.contrib.django.store`) or from any store URL.
"""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

from consumer_auth.contrib._settings import SETTING, StoreFactory, load_gateway
from consumer_auth.gateway import Gateway
from consumer_auth.store import Store

__all__ = ["SETTING", "STORES", "Settings", "conf"]


def _django_store(value: object, where: str) -> Store:
    from .store import store_from_setting  # the models: only once the app registry is ready

    return store_from_setting(value, where)


STORES: dict[str, StoreFactory] = {"django": _django_store}
"""The store types a Django setting may name besides store URLs: ``"django"``."""


class Settings:
    """The integration's view of Django's settings; use the module's :data:`conf` instance."""

    def __init__(self) -> None:
        self._gateway: Gateway | None = None
        self._built = False
        self._lock = threading.Lock()

    @property
    def CONSUMER_AUTH(self) -> object:  # noqa: N802 - the setting's own name
        """The raw setting (``None`` when it is not set)."""
        return getattr(settings, SETTING, None)

    @property
    def gateway(self) -> Gateway:
        """The gateway the setting describes, built on first use.

        Raises:
            ConfigError: the setting is missing or invalid (``manage.py check`` reports it first).
        """
        gateway = self._gateway
        if gateway is None:
            with self._lock:
                if self._gateway is None:
                    value = self.CONSUMER_AUTH
                    built = load_gateway(value, SETTING, STORES)
                    if built.watcher is not None:
                        from .store import follow_rehashes

                        follow_rehashes(built.watcher)
                    self._gateway = built
                    self._built = not isinstance(value, Gateway)
                gateway = self._gateway
        return gateway

    def reset(self) -> None:
        """Forget the built gateway (the next request builds it again from the setting).

        A gateway built from the setting stops following its store; one given as the setting is left
        as it is.
        """
        with self._lock:
            gateway, built = self._gateway, self._built
            self._gateway, self._built = None, False
        if gateway is not None and built:
            gateway.close()


conf = Settings()


def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING:
        conf.reset()


setting_changed.connect(_setting_changed, dispatch_uid="consumer_auth.contrib.django.conf")
