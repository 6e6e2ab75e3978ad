"""``manage.py consumer_auth_export``: every consumer as the consumers: section of a configuration."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

import yaml
from django.core.management.base import BaseCommand

from consumer_auth.contrib.django._transfer import export_document


class Command(BaseCommand):
    help = (
        "Print every consumer and its credentials as the consumers: section of a configuration file "
        "(YAML or JSON). The output holds password hashes: keep it as secret as the database."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--format", choices=("yaml", "json"), default="yaml")
        parser.add_argument("--database", default="default", help="the database alias (default: default)")

    def handle(self, *args: Any, **options: Any) -> None:
        document = export_document(using=options["database"])
        if options["format"] == "json":
            self.stdout.write(json.dumps(document, indent=2, ensure_ascii=False))
        else:
            self.stdout.write(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), ending="")
