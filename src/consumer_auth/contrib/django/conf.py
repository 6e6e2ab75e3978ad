"""The lazy settings object: reads ``settings.CONSUMER_AUTH`` when first needed, builds the gateway once.

The gateway is rebuilt after ``override_settings(CONSUMER_AUTH=...)`` (Django's ``setting_changed``
signal), so tests can swap configurations.
"""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

from consumer_auth.contrib._settings import SETTING, load_gateway
from consumer_auth.gateway import Gateway

__all__ = ["SETTING", "Settings", "conf"]


class Settings:
    """The integration's view of Django's settings; use the module's :data:`conf` instance."""

    def __init__(self) -> None:
        self._gateway: Gateway | None = None
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
                    self._gateway = load_gateway(self.CONSUMER_AUTH, SETTING)
                gateway = self._gateway
        return gateway

    def reset(self) -> None:
        """Forget the built gateway (the next request builds it again from the setting)."""
        with self._lock:
            self._gateway = None


conf = Settings()


def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING:
        conf.reset()


setting_changed.connect(_setting_changed, dispatch_uid="consumer_auth.contrib.django.conf")
