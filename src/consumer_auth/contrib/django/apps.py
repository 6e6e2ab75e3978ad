"""The Django app configuration (``consumer_auth.contrib.django`` in ``INSTALLED_APPS``)."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks
from django.db.models.signals import post_delete, post_save


class ConsumerAuthConfig(AppConfig):
    """Registers the system checks of :mod:`consumer_auth.contrib.django.checks` and has every change
    of the consumer models advance the store's revision."""

    name = "consumer_auth.contrib.django"
    label = "consumer_auth"
    verbose_name = "Consumer auth"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .checks import check_database, check_settings
        from .models import BasicAuthCredential, Consumer, ConsumerGroup
        from .store import on_model_change

        checks.register(check_settings)
        checks.register(check_database, checks.Tags.database)
        for model in (Consumer, BasicAuthCredential, ConsumerGroup):
            for signal in (post_save, post_delete):
                signal.connect(on_model_change, sender=model, dispatch_uid=f"consumer_auth.{model.__name__}")
