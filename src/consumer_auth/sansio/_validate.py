"""Type checks shared by every constructor, so that all config errors read alike."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from consumer_auth.errors import ConfigError

_KINDS = {
    bool: "a boolean",
    int: "an integer",
    str: "a string",
    float: "a number",
}


def describe(value: object) -> str:
    """Show a (non-secret) value in an error message, shortened."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def fail(path: str, reason: str) -> NoReturn:
    raise ConfigError(path, reason)


def expect_bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        fail(path, f"expected a boolean, got {describe(value)}")
    return value


def expect_int(value: object, path: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(path, f"expected an integer, got {describe(value)}")
    if minimum is not None and value < minimum:
        fail(path, f"expected an integer >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        fail(path, f"expected an integer <= {maximum}, got {value}")
    return value


def expect_number(value: object, path: str, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        fail(path, f"expected a number, got {describe(value)}")
    if positive and value <= 0:
        fail(path, f"expected a positive number, got {describe(value)}")
    return float(value)


def expect_str(value: object, path: str, *, secret: bool = False, nonempty: bool = True) -> str:
    if not isinstance(value, str):
        got = type(value).__name__ if secret else describe(value)
        fail(path, f"expected a string, got {got}")
    if nonempty and not value:
        fail(path, "expected a non-empty string")
    return value


def expect_str_list(value: object, path: str, *, nonempty: bool = True) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        fail(path, f"expected a list of strings, got {describe(value)}")
    items = tuple(value)
    if nonempty and not items:
        fail(path, "expected a non-empty list")
    for index, item in enumerate(items):
        expect_str(item, f"{path}[{index}]")
    return items


def expect_mapping(value: object, path: str, *, secret: bool = False) -> Mapping[str, Any]:
    """``value`` as a mapping with string keys. With ``secret`` (a place that holds passwords), a wrong
    value is described by its type only: ``basic-auth: "alex:123456"`` must not echo the password."""
    if not isinstance(value, Mapping):
        got = type(value).__name__ if secret else describe(value)
        fail(path, f"expected a mapping, got {got}")
    for key in value:
        if not isinstance(key, str):
            fail(path, f"expected string keys, got {describe(key)}")
    return value


def expect_list(value: object, path: str, *, secret: bool = False) -> list[Any]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        got = type(value).__name__ if secret else describe(value)
        fail(path, f"expected a list, got {got}")
    return list(value)


def expect_choice(value: object, path: str, choices: Iterable[str]) -> str:
    options = tuple(choices)
    if value not in options:
        fail(path, f"expected one of {', '.join(repr(c) for c in options)}, got {describe(value)}")
    return str(value)


def reject_unknown(mapping: Mapping[str, Any], allowed: Iterable[str], path: str) -> None:
    known = set(allowed)
    for key in mapping:
        if key not in known:
            where = f"{path}.{key}" if path else key
            fail(where, f"unknown key (expected one of: {', '.join(sorted(known))})")


def check_url(url: str, path: str, schemes: Iterable[str], *, host: bool = True) -> str:
    """A URL with one of ``schemes`` and (unless ``unix``/``sqlite`` or ``host`` is false) a host.

    The URL itself is never part of the error: it may hold a password.
    """
    from urllib.parse import urlsplit

    options = tuple(schemes)
    expected = f"expected a URL starting with {', '.join(s + '://' for s in options)}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - checks the port is a number in range
    except ValueError:
        fail(path, f"{expected} (this one cannot be parsed)")
    scheme = parts.scheme.lower()
    if scheme not in options:
        shown = f"{scheme!r}" if scheme.isascii() and scheme.isalnum() and len(scheme) <= 20 else "another"
        fail(path, f"{expected}, got scheme {shown}" if scheme else f"{expected}, got no scheme")
    if not url[len(scheme) :].startswith("://"):
        fail(path, f"{expected}, got no '//' after the scheme")
    if host and scheme != "unix" and not parts.hostname:
        fail(path, f"{expected} and a host, got no host")
    return url
