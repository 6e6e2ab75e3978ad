"""Parse an ``Authorization`` header into Basic credentials (RFC 7617).

Never raises on client input: the result is either :class:`BasicCredentials` or a :class:`ParseFailure`
saying why the header cannot be used. The rules (see ``docs/compatibility.md``):

- the scheme ``Basic`` is case-insensitive and followed by one or more spaces, then the token;
  whitespace around the whole value is ignored;
- the token is standard-alphabet base64; missing ``=`` padding is accepted, anything else invalid is not;
- the decoded bytes are UTF-8, or latin-1 when they are not valid UTF-8;
- the text is split on the first ``:`` only, so passwords may contain colons;
- more than one ``Authorization`` header is invalid.
"""

from __future__ import annotations

import binascii
import enum
import re
from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["BasicCredentials", "ParseFailure", "parse_authorization"]

# Scheme, at least one space, then a base64 token with at most two '=' of padding.
_BASIC = re.compile(r"[Bb][Aa][Ss][Ii][Cc] +([A-Za-z0-9+/]+={0,2})")
_WHITESPACE = " \t"


class ParseFailure(enum.Enum):
    """Why no credentials could be read from a request."""

    MISSING = "missing"
    """There is no ``Authorization`` header at all."""
    INVALID = "invalid"
    """There is one, but it cannot be used (other scheme, empty, bad base64, no colon, several headers)."""


class BasicCredentials(NamedTuple):
    """A username and password read from a request. ``repr`` never shows the password.

    Immutable (a named tuple: made on every request, so as cheap to build as Python allows).
    """

    username: str
    password: str

    def __repr__(self) -> str:
        return f"BasicCredentials(username={self.username!r}, password=<hidden>)"


def parse_authorization(values: Sequence[str]) -> BasicCredentials | ParseFailure:
    """Read Basic credentials from the values of every ``Authorization`` header of a request.

    Args:
        values: Each ``Authorization`` header value, in order, as text (bytes decoded as latin-1).

    Returns:
        The credentials, or why there are none.

    Example:
        >>> parse_authorization(["Basic YWxleDoxMjM0NTY="])
        BasicCredentials(username='alex', password=<hidden>)
        >>> parse_authorization([])
        <ParseFailure.MISSING: 'missing'>
    """
    if not values:
        return ParseFailure.MISSING
    if len(values) > 1:
        return ParseFailure.INVALID
    value = values[0]
    if value[:6] == "Basic " and value[6:7] != " ":
        # The usual form, decoded at once: a strict decode accepts only what the rules below accept
        # (and decodes it the same); anything it refuses takes the full way.
        try:
            raw = binascii.a2b_base64(value[6:], strict_mode=True)
        except ValueError:  # binascii.Error, or a non-ASCII value
            pass
        else:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            username, colon, password = text.partition(":")
            if colon:
                return BasicCredentials(username, password)
            return ParseFailure.INVALID
    match = _BASIC.fullmatch(values[0].strip(_WHITESPACE))
    if match is None:
        return ParseFailure.INVALID
    token = match.group(1)
    unpadded = token.rstrip("=")
    if len(unpadded) % 4 == 1:
        return ParseFailure.INVALID
    try:
        raw = binascii.a2b_base64(unpadded + "=" * (-len(unpadded) % 4), strict_mode=True)
    except binascii.Error:
        return ParseFailure.INVALID
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    username, colon, password = text.partition(":")
    if not colon:
        return ParseFailure.INVALID
    return BasicCredentials(username, password)
