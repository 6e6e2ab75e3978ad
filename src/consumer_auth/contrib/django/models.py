"""The consumers of a Django project, managed in Django admin and followed by the gateway.

Three models, in the configuration schema's terms (SPEC §1, §10):

- :class:`Consumer` — a named API client: ``name``, ``custom_id`` (forwarded as ``X-Consumer-Custom-ID``),
  free ``labels``, a description and at most one ``group``;
- :class:`ConsumerGroup` — plugins shared by its consumers: ``ident`` (the ``group_id`` consumers name),
  a description, ``labels`` and ``plugins`` (the configuration schema's mapping, as JSON);
- :class:`BasicAuthCredential` — a login of one consumer: an optional ``ident`` (forwarded as
  ``X-Credential-Identifier``), the ``username`` the client sends (unique across all consumers) and the
  password's *hash* only (argon2id when set here; htpasswd's forms when imported).

Every save or delete also advances the one-row :class:`Revision` in the same transaction; the store of
:mod:`consumer_auth.contrib.django.store` compares it to notice a change made by any process.
"""

from __future__ import annotations

import datetime
import uuid
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from consumer_auth.errors import ConfigError
from consumer_auth.sansio.passwords import verifier_from_hash
from consumer_auth.store import prepare

if TYPE_CHECKING:
    from django.db.models.fields.related_descriptors import RelatedManager

__all__ = [
    "BasicAuthCredential",
    "Consumer",
    "ConsumerGroup",
    "Revision",
    "consumer_document",
    "credential_document",
    "group_document",
    "hash_format",
]

_name = RegexValidator(r"^[A-Za-z0-9_\-]+\Z", _("Letters, digits, '_' and '-' only."))
_ident = RegexValidator(r"^[A-Za-z0-9_.\-]{1,64}\Z", _("1-64 letters, digits, '_', '-' or '.'."))

_FORMATS = (
    ("$argon2id$", "argon2id"),
    ("$argon2i$", "argon2i"),
    ("$argon2d$", "argon2d"),
    ("$2", "bcrypt"),
    ("$apr1$", "apr1-md5"),
    ("{SHA}", "sha1"),
)


def hash_format(stored: str) -> str:
    """The name of a stored hash's format (``argon2id``), never any part of the hash itself."""
    if not stored:
        return ""
    return next((name for prefix, name in _FORMATS if stored.startswith(prefix)), "unknown")


def consumer_document(
    name: str, custom_id: str, labels: object, desc: str, group_id: str | None = None
) -> dict[str, Any]:
    """A consumer's fields as a configuration document (without its credentials)."""
    shown = dict(labels) if isinstance(labels, dict) else labels
    if custom_id and isinstance(shown, dict):
        shown["custom_id"] = custom_id
    document: dict[str, Any] = {"username": name}
    if shown:
        document["labels"] = shown
    if desc:
        document["desc"] = desc
    if group_id:
        document["group_id"] = group_id
    return document


def group_document(ident: str, desc: str, labels: object, plugins: object) -> dict[str, Any]:
    """A consumer group's fields as a configuration document."""
    document: dict[str, Any] = {"id": ident}
    if desc:
        document["desc"] = desc
    if labels:
        document["labels"] = labels
    if plugins:
        document["plugins"] = plugins
    return document


def credential_document(ident: str, username: str, password_hash: str) -> dict[str, Any]:
    """A credential's fields as a configuration document (the hash included: never show it)."""
    document: dict[str, Any] = {
        "plugins": {"basic-auth": {"username": username, "password_hash": password_hash}}
    }
    if ident:
        document["id"] = ident
    return document


def _config_error(error: ConfigError, fields: dict[str, str]) -> ValidationError:
    """A ConfigError as Django's form errors: on the field it names, else on the whole object."""
    head = error.path.split(".")[0]
    field = fields.get(error.path) or fields.get(head)
    if field is None:
        return ValidationError(str(error))
    return ValidationError({field: error.reason if error.path == head else str(error)})


class ConsumerGroup(models.Model):
    """Plugins shared by several consumers, as ``consumer_groups[]`` in a configuration file.

    A group that consumers are in cannot be deleted (``PROTECT``): move them out first.
    """

    ident: models.CharField[str, str] = models.CharField(
        _("id"),
        max_length=64,
        unique=True,
        validators=[_ident],
        help_text=_("How consumers name it (their group_id): 1-64 letters, digits, '_', '-' or '.'."),
    )
    desc: models.TextField[str, str] = models.TextField(_("description"), blank=True)
    labels = models.JSONField(
        _("labels"),
        default=dict,
        blank=True,
        help_text=_('Free labels, a JSON object of strings: {"tier": "free"}.'),
    )
    plugins = models.JSONField(
        _("plugins"),
        default=dict,
        blank=True,
        help_text=_(
            "A JSON object of plugin names and their settings, as in a configuration file: "
            '{"consumer-restriction": {"blacklist": ["mallory"]}}. They apply to the group\'s consumers '
            "(a consumer's own plugin of the same name wins; the group's wins over a route's and a "
            "service's)."
        ),
    )
    created: models.DateTimeField[datetime.datetime, datetime.datetime] = models.DateTimeField(
        _("created"), auto_now_add=True
    )
    modified: models.DateTimeField[datetime.datetime, datetime.datetime] = models.DateTimeField(
        _("modified"), auto_now=True
    )

    if TYPE_CHECKING:
        consumers: RelatedManager[Consumer]

    class Meta:
        ordering = ("ident",)
        verbose_name = _("consumer group")
        verbose_name_plural = _("consumer groups")

    def __str__(self) -> str:
        return self.ident

    def document(self) -> dict[str, Any]:
        """The group as a configuration document."""
        return group_document(self.ident, self.desc, self.labels, self.plugins)

    def clean(self) -> None:
        """Validate as the configuration loader does (the plugins' schemas included), on the fields."""
        try:
            prepare("consumer_groups", self.ident, self.document())
        except ConfigError as error:
            raise _config_error(
                error, {"id": "ident", "labels": "labels", "desc": "desc", "plugins": "plugins"}
            ) from None


class Consumer(models.Model):
    """A named API client, as ``consumers[]`` in a configuration file."""

    name: models.CharField[str, str] = models.CharField(
        _("name"),
        max_length=64,
        unique=True,
        validators=[_name],
        help_text=_("Forwarded as X-Consumer-Username. Letters, digits, '_' and '-'."),
    )
    custom_id: models.CharField[str, str] = models.CharField(
        _("custom id"),
        max_length=128,
        blank=True,
        help_text=_("Optional; forwarded as X-Consumer-Custom-ID (the custom_id label)."),
    )
    labels = models.JSONField(
        _("labels"),
        default=dict,
        blank=True,
        help_text=_('Free labels, a JSON object of strings: {"team": "billing"}.'),
    )
    desc: models.TextField[str, str] = models.TextField(_("description"), blank=True)
    group: models.ForeignKey[ConsumerGroup | None, ConsumerGroup | None] = models.ForeignKey(
        ConsumerGroup,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="consumers",
        verbose_name=_("consumer group"),
        help_text=_("Optional; the group's plugins apply to this consumer."),
    )
    created: models.DateTimeField[datetime.datetime, datetime.datetime] = models.DateTimeField(
        _("created"), auto_now_add=True
    )
    modified: models.DateTimeField[datetime.datetime, datetime.datetime] = models.DateTimeField(
        _("modified"), auto_now=True
    )

    if TYPE_CHECKING:
        credentials: RelatedManager[BasicAuthCredential]

    class Meta:
        ordering = ("name",)
        verbose_name = _("consumer")
        verbose_name_plural = _("consumers")

    def __str__(self) -> str:
        return self.name

    def document(self) -> dict[str, Any]:
        """The consumer as a configuration document (without its credentials)."""
        group = self.group.ident if self.group is not None else None
        return consumer_document(self.name, self.custom_id, self.labels, self.desc, group)

    def clean(self) -> None:
        """Validate as the configuration loader does, the errors on the fields they concern."""
        if isinstance(self.labels, dict) and "custom_id" in self.labels:
            raise ValidationError({"labels": _("Set custom_id in the Custom id field.")})
        try:
            prepare("consumers", self.name, self.document())
        except ConfigError as error:
            raise _config_error(error, {"username": "name", "labels": "labels", "desc": "desc"}) from None


class BasicAuthCredential(models.Model):
    """A basic-auth login of a consumer. Only the password's hash is stored, and no page shows it."""

    consumer: models.ForeignKey[Consumer, Consumer] = models.ForeignKey(
        Consumer, on_delete=models.CASCADE, related_name="credentials", verbose_name=_("consumer")
    )
    ident: models.CharField[str, str] = models.CharField(
        _("id"),
        max_length=64,
        blank=True,
        validators=[_ident],
        help_text=_("Optional; forwarded as X-Credential-Identifier."),
    )
    username: models.CharField[str, str] = models.CharField(
        _("username"),
        max_length=255,
        unique=True,
        help_text=_("What the client logs in with; unique across all consumers; no ':'."),
    )
    password_hash: models.CharField[str, str] = models.CharField(
        _("password hash"), max_length=512, editable=False
    )
    created: models.DateTimeField[datetime.datetime, datetime.datetime] = models.DateTimeField(
        _("created"), auto_now_add=True
    )
    modified: models.DateTimeField[datetime.datetime, datetime.datetime] = models.DateTimeField(
        _("modified"), auto_now=True
    )

    class Meta:
        ordering = ("consumer__name", "username")
        verbose_name = _("basic-auth credential")
        verbose_name_plural = _("basic-auth credentials")
        constraints = [
            models.UniqueConstraint(
                fields=("consumer", "ident"),
                condition=~models.Q(ident=""),
                name="consumer_auth_credential_ident_unique",
                violation_error_message=_("This consumer already has a credential with this id."),
            )
        ]

    def __str__(self) -> str:
        return self.username

    def __repr__(self) -> str:
        return f"<BasicAuthCredential {self.username!r} password=<hidden>>"

    @property
    def password_format(self) -> str:
        """The stored hash's format (``argon2id``, ``apr1-md5``, ...), or ``""`` when none is set."""
        return hash_format(self.password_hash)

    def set_password(self, password: str) -> None:
        """Store ``password`` as an argon2id hash (it is never kept in clear).

        Raises:
            ValueError: the password is empty (an empty password never authenticates).
        """
        from consumer_auth.sansio.passwords import hash_password

        self.password_hash = hash_password(password)

    def document(self) -> dict[str, Any]:
        """The credential as a configuration document (the hash included: never show it)."""
        return credential_document(self.ident, self.username, self.password_hash)

    def clean(self) -> None:
        """Validate the username as the configuration loader does (no ``:``, not empty)."""
        if ":" in (self.username or ""):
            raise ValidationError(
                {"username": _("A username with ':' can never log in with HTTP Basic (RFC 7617).")}
            )
        if self.password_hash:
            try:
                verifier_from_hash(self.password_hash)
            except ConfigError as error:
                raise ValidationError(error.reason) from None


class Revision(models.Model):
    """One row, advanced in the transaction of every change: what other processes compare.

    ``epoch`` is new whenever the row is (re)created (``manage.py flush``, a restored dump without it),
    so a counter that starts again from 0 is never mistaken for one already seen.
    """

    epoch: models.UUIDField[uuid.UUID, uuid.UUID] = models.UUIDField(default=uuid.uuid4, editable=False)
    value: models.BigIntegerField[int, int] = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = _("revision")

    def __str__(self) -> str:
        return str(self.value)
