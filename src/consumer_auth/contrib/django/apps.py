"""The Django app configuration (``consumer_auth.contrib.django`` in ``INSTALLED_APPS``)."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class ConsumerAuthConfig(AppConfig):
    """Registers the system checks of :mod:`consumer_auth.contrib.django.checks`."""

    name = "consumer_auth.contrib.django"
    label = "consumer_auth"
    verbose_name = "Consumer auth"

    def ready(self) -> None:
        from .checks import check_settings

        checks.register(check_settings)
