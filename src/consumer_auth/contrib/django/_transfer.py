"""Consumers (and their consumer groups) in and out of the models, in the configuration schema
(``consumer_auth_import``/``_export``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from django.db import IntegrityError, transaction

from consumer_auth.config import load_file, parse_config
from consumer_auth.errors import ConfigError
from consumer_auth.htpasswd import consumers_document, read_htpasswd

from .models import BasicAuthCredential, Consumer, ConsumerGroup

__all__ = ["CONFIG_SUFFIXES", "export_document", "import_document", "read_consumers", "read_groups"]

CONFIG_SUFFIXES = (".yaml", ".yml", ".json", ".toml")
"""Files read as configuration; any other file is read as htpasswd."""


def read_consumers(
    path: str | Path, *, htpasswd: bool | None = None, on_skip: Callable[[str, str], None] | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """The ``consumers`` of a configuration file, or of an htpasswd file, validated.

    Returns:
        The consumer documents, and the other top-level keys of a configuration file (not imported;
        read its ``consumer_groups`` with :func:`read_groups`).

    Raises:
        ConfigError: naming the file and the place (``users.yaml: consumers[1].plugins...``).
    """
    file = Path(path)
    if htpasswd is None:
        htpasswd = file.suffix.lower() not in CONFIG_SUFFIXES
    if htpasswd:
        document: object = consumers_document(read_htpasswd(file, on_skip=on_skip))
    else:
        document = load_file(file)
    if not isinstance(document, Mapping):
        raise ConfigError(str(file), "expected a mapping with a 'consumers' list")
    try:
        parse_config(document)
    except ConfigError as error:
        raise ConfigError(f"{file}: {error.path}" if error.path else str(file), error.reason) from None
    consumers = [dict(item) for item in document.get("consumers") or ()]
    others = sorted(
        key for key, value in document.items() if key not in ("consumers", "consumer_groups") and value
    )
    return consumers, others


def read_groups(path: str | Path) -> list[dict[str, Any]]:
    """The ``consumer_groups`` of a configuration file (``[]`` for an htpasswd file), already validated
    by :func:`read_consumers`."""
    file = Path(path)
    if file.suffix.lower() not in CONFIG_SUFFIXES:
        return []
    document = load_file(file)
    groups = document.get("consumer_groups") if isinstance(document, Mapping) else None
    return [dict(item) for item in groups or ()]


def _credentials(document: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    found: list[tuple[str, Mapping[str, Any]]] = []
    basic = (document.get("plugins") or {}).get("basic-auth")
    if basic is not None:
        found.append(("", basic))
    for entry in document.get("credentials") or ():
        found.append((entry.get("id") or "", entry["plugins"]["basic-auth"]))
    return found


def import_document(
    consumers: list[dict[str, Any]], *, using: str = "default", groups: list[dict[str, Any]] | None = None
) -> tuple[int, int]:
    """Create or update consumers by name, replacing their credentials, in one transaction; and first
    the consumer ``groups`` by id (replaced whole), which the consumers' ``group_id`` may also name
    when they are already in the database.

    Clear passwords are stored as argon2id hashes; stored hashes are kept as they are.

    Returns:
        How many consumers were created and how many updated.

    Raises:
        ConfigError: a credential username is already another consumer's, or a ``group_id`` names no
            group (nothing is changed).
    """
    created = updated = 0
    try:
        with transaction.atomic(using=using):
            for group in groups or ():
                ConsumerGroup.objects.using(using).update_or_create(
                    ident=group["id"],
                    defaults={
                        "desc": group.get("desc") or "",
                        "labels": dict(group.get("labels") or {}),
                        "plugins": dict(group.get("plugins") or {}),
                    },
                )
            for index, document in enumerate(consumers):
                labels = dict(document.get("labels") or {})
                group_id = document.get("group_id")
                in_group = None
                if group_id is not None:
                    in_group = ConsumerGroup.objects.using(using).filter(ident=group_id).first()
                    if in_group is None:
                        raise ConfigError(
                            f"consumers[{index}].group_id", f"no consumer group with id {group_id!r}"
                        )
                consumer, new = Consumer.objects.using(using).update_or_create(
                    name=document["username"],
                    defaults={
                        "custom_id": labels.pop("custom_id", ""),
                        "labels": labels,
                        "desc": document.get("desc") or "",
                        "group": in_group,
                    },
                )
                created, updated = (created + 1, updated) if new else (created, updated + 1)
                consumer.credentials.all().delete()
                for ident, basic in _credentials(document):
                    credential = BasicAuthCredential(
                        consumer=consumer, ident=ident, username=basic["username"]
                    )
                    if basic.get("password") is not None:
                        credential.set_password(basic["password"])
                    else:
                        credential.password_hash = basic["password_hash"]
                    credential.save(using=using)
    except IntegrityError:
        raise ConfigError(
            "consumers", "a credential username is already another consumer's (nothing was imported)"
        ) from None
    return created, updated


def export_document(*, using: str = "default") -> dict[str, Any]:
    """Every consumer with its credentials, in the configuration schema (hashes included), and the
    consumer groups when there are any."""
    groups = [group.document() for group in ConsumerGroup.objects.using(using).order_by("ident")]
    consumers: list[dict[str, Any]] = []
    query = Consumer.objects.using(using).order_by("name").select_related("group")
    for consumer in query.prefetch_related("credentials"):
        document = consumer.document()
        credentials = []
        for credential in sorted(consumer.credentials.all(), key=lambda c: c.pk):
            credentials.append(credential.document())
        if credentials:
            document["credentials"] = credentials
        consumers.append(document)
    return {"consumer_groups": groups, "consumers": consumers} if groups else {"consumers": consumers}
