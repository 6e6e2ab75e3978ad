"""``manage.py consumer_auth_import FILE``: consumers from a YAML/JSON/TOML configuration or htpasswd file."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from consumer_auth.contrib.django._transfer import import_document, read_consumers, read_groups
from consumer_auth.errors import ConfigError


class Command(BaseCommand):
    help = (
        "Create or update consumers (by name, replacing their credentials) from the consumers: section of "
        "a YAML, JSON or TOML configuration file, or from an htpasswd file. Clear passwords are stored as "
        "argon2id hashes. All or nothing."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "file", help="a .yaml, .yml, .json or .toml configuration file, or an htpasswd file"
        )
        parser.add_argument("--htpasswd", action="store_true", help="read FILE as htpasswd whatever its name")
        parser.add_argument(
            "--skip-unsupported",
            action="store_true",
            help="htpasswd: skip lines whose hash form cannot be verified instead of failing",
        )
        parser.add_argument("--dry-run", action="store_true", help="validate only, change nothing")
        parser.add_argument("--database", default="default", help="the database alias (default: default)")

    def handle(self, *args: Any, **options: Any) -> None:
        def note(place: str, reason: str) -> None:
            self.stderr.write(f"{place}: {reason}")

        try:
            consumers, others = read_consumers(
                options["file"],
                htpasswd=True if options["htpasswd"] else None,
                on_skip=note if options["skip_unsupported"] else None,
            )
            if others:
                self.stderr.write(f"not imported (set them in CONSUMER_AUTH): {', '.join(others)}")
            groups = [] if options["htpasswd"] else read_groups(options["file"])
            if options["dry_run"]:
                self.stdout.write(f"{len(consumers)} consumers are valid; nothing was changed (--dry-run)")
                return
            created, updated = import_document(consumers, using=options["database"], groups=groups)
        except ConfigError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"imported {len(consumers)} consumers ({created} created, {updated} updated)")
        if groups:
            self.stdout.write(f"and {len(groups)} consumer groups (created or replaced)")
