"""The command line's argparse helpers, shared by ``cli.py`` and ``_store_cli.py``."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["BadValue", "command", "port_number"]


class BadValue(Exception):
    """An option's value is refused: a ``consumer-auth: error:`` line and exit status 1.

    Raised by the ``type=`` of an option; argparse lets it through (it is not a ``ValueError``), so
    :func:`main` reports it on one line instead of argparse's usage message.
    """


def port_number(text: str) -> int:
    """The ``type=`` of ``--port``: 0 (any free port) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise BadValue(f"--port: expected a port number from 0 to 65535, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise BadValue(f"--port: expected a port number from 0 to 65535, got {port}")
    return port


def command(
    commands: Any, name: str, summary: str, description: str, examples: str
) -> argparse.ArgumentParser:
    """A sub-command whose ``--help`` has a description and examples."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples.strip().splitlines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser
