"""Reading a password for a command: from the terminal (asked twice) or one line of standard input."""

from __future__ import annotations

import getpass
from typing import TextIO

__all__ = ["read_password"]


def read_password(stdin: TextIO) -> str:
    """A password from the terminal (asked twice, not echoed) or the first line of ``stdin``.

    Never from the command line, where ``ps`` would show it.

    Raises:
        ValueError: the two entries differ, or the password is empty.
    """
    if stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat it: ") != password:
            raise ValueError("the two passwords differ")
    else:
        password = stdin.readline().rstrip("\r\n")
    if not password:
        raise ValueError("an empty password never authenticates")
    return password
