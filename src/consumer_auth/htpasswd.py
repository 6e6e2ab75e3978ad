"""Read an Apache ``htpasswd`` file into consumers for the configuration (``consumer-auth import-htpasswd``).

Each ``user:hash`` line becomes one consumer with one basic-auth credential that keeps the stored hash:
APR1-MD5 (``$apr1$``, htpasswd's default), bcrypt (``$2y$``), SHA-1 (``{SHA}``), SHA-crypt (``$5$``/``$6$``,
``openssl passwd -5/-6``) and nginx's clear-text ``{PLAIN}`` carry over as they are. Blank lines and ``#``
comments are skipped. Hash forms the library cannot verify (DES ``crypt()``, ``$1$`` MD5-crypt) are an error
naming the line, or are skipped with a note when asked to.

A consumer name may only hold letters, digits, ``_`` and ``-``; a login such as ``ann@example.com`` keeps
that login as its credential username and gets the consumer name ``ann_example_com``.

Example:
    >>> entries = parse_htpasswd("alex:$apr1$70iJyua7$gMCnDoXYSPfM9sURRcgI3.\\n", "users.htpasswd")
    >>> consumers_document(entries)["consumers"][0]["plugins"]["basic-auth"]["username"]
    'alex'
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .passwords import verifier_from_hash

__all__ = [
    "HtpasswdEntry",
    "add_arguments",
    "consumers_document",
    "main",
    "parse_htpasswd",
    "read_htpasswd",
    "run",
]

_NOT_A_NAME = re.compile(r"[^A-Za-z0-9_\-]+")


@dataclass(frozen=True, slots=True)
class HtpasswdEntry:
    """One line of an htpasswd file. ``repr`` never shows the hash."""

    login: str
    password_hash: str
    line: int

    def __repr__(self) -> str:
        return f"HtpasswdEntry(login={self.login!r}, line={self.line}, password_hash=<hidden>)"


def parse_htpasswd(
    text: str, source: str = "htpasswd", *, on_skip: Callable[[str, str], None] | None = None
) -> list[HtpasswdEntry]:
    """Parse the text of an htpasswd file, checking every hash as the gateway will.

    Args:
        text: The file's content.
        source: The file's name, for messages (``users.htpasswd:3: ...``).
        on_skip: When given, a line whose hash form is unsupported or malformed is skipped and
            ``on_skip(place, reason)`` is called instead of raising.

    Returns:
        The entries, in file order.

    Raises:
        ConfigError: at ``<source>:<line>`` for a line without ``user:hash``, a duplicate user, or (without
            ``on_skip``) a hash that cannot be used. The hash is never part of the message.
    """
    entries: list[HtpasswdEntry] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        place = f"{source}:{number}"
        login, colon, stored = line.partition(":")
        if not colon or not login or not stored:
            raise ConfigError(place, "expected 'user:hash'")
        if login in seen:
            raise ConfigError(place, f"duplicate user {login!r} (also on line {seen[login]})")
        try:
            verifier_from_hash(stored)
        except ConfigError as error:
            if on_skip is None:
                raise ConfigError(place, f"user {login!r}: {error.reason}") from None
            on_skip(place, f"skipped user {login!r}: {error.reason}")
            continue
        seen[login] = number
        entries.append(HtpasswdEntry(login, stored, number))
    return entries


def read_htpasswd(
    path: str | Path, *, on_skip: Callable[[str, str], None] | None = None
) -> list[HtpasswdEntry]:
    """Read and parse an htpasswd file (see :func:`parse_htpasswd`).

    Raises:
        ConfigError: the file cannot be read, or a line is invalid.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(
            str(file), f"cannot read the file ({error.strerror or type(error).__name__})"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(str(file), "the file is not UTF-8 text") from None
    return parse_htpasswd(text, str(file), on_skip=on_skip)


def _consumer_name(login: str, taken: set[str]) -> str:
    base = _NOT_A_NAME.sub("_", login).strip("_") or "user"
    name, suffix = base, 2
    while name in taken:
        name, suffix = f"{base}-{suffix}", suffix + 1
    taken.add(name)
    return name


def consumers_document(entries: list[HtpasswdEntry]) -> dict[str, Any]:
    """The ``consumers:`` part of a configuration (SPEC §6 schema) for these entries.

    Consumer names are the logins, made valid (``ann@example.com`` → ``ann_example_com``) and unique.
    """
    taken: set[str] = set()
    consumers = [
        {
            "username": _consumer_name(entry.login, taken),
            "plugins": {"basic-auth": {"username": entry.login, "password_hash": entry.password_hash}},
        }
        for entry in entries
    ]
    return {"consumers": consumers}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``import-htpasswd``, for the ``consumer-auth`` command and :func:`main`."""
    parser.add_argument("file", help="the htpasswd file (Apache's or nginx's auth_basic_user_file)")
    parser.add_argument(
        "--format",
        choices=("yaml", "json"),
        default="yaml",
        help="print the consumers: document as YAML (default) or JSON; either loads as a configuration file",
    )
    parser.add_argument(
        "--skip-unsupported",
        action="store_true",
        help="skip lines whose hash form cannot be verified (noted on standard error) instead of failing",
    )


def run(options: argparse.Namespace) -> int:
    """Print the consumers of ``options.file`` as configuration; 1 with a ``FILE:LINE: ...`` message if refused."""

    def note(place: str, reason: str) -> None:
        print(f"{place}: {reason}", file=sys.stderr)

    try:
        entries = read_htpasswd(options.file, on_skip=note if options.skip_unsupported else None)
    except ConfigError as error:
        print(f"consumer-auth: error: {error}", file=sys.stderr)
        return 1
    document = consumers_document(entries)
    if options.format == "json":
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        print(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``import-htpasswd FILE``: print the consumers of an htpasswd file as configuration (YAML or JSON).

    Exit status 0 on success, 1 with a ``FILE:LINE: ...`` message on standard error when the file is refused.
    """
    parser = argparse.ArgumentParser(
        prog="consumer-auth import-htpasswd",
        description="Print the consumers of an htpasswd file for the consumers: section of a configuration.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
