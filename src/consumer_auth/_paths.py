"""Readings of a request path that servers behind the gateway may make, sans-IO (SPEC §8).

The route index matches the decoded, normalized path. Other servers read some paths differently: a
servlet container drops ``;params`` from a segment and reads ``..;`` as ``..``, IIS reads ``\\`` as
``/``, Windows drops a segment's trailing dots and spaces, some servers stop at a NUL, a
double-decoding server reads ``%2e`` (sent as ``%252e``) as ``.``, and Python's ``$`` matches before a
final newline. :func:`examine` looks at a path once and says whether it must be refused (400) and, if
another reading of it differs, what that reading is.

A clean path (no control character, ``%``, ``;``, ``\\``, and no segment ending in ``.`` or a space) is
recognised by one regular-expression scan and costs nothing more.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from .routing import normalize_path

__all__ = ["ODD_CHARACTER", "cut_fragment", "examine", "lenient_reading", "plain"]

# Characters that can make another server read a path differently; a segment ending in "." too.
ODD_CHARACTER = re.compile(r"[\x00-\x20\x7f%;\\]").search
"""``ODD_CHARACTER(path)`` finds a control character, a space, ``%``, ``;`` or ``\\`` (see :func:`plain`)."""


def plain(path: str) -> bool:
    """Whether :func:`examine` has nothing to say about ``path`` (the usual case): one scan for a control
    character, a space, ``%``, ``;`` or ``\\``, and two for a segment ending in ``.``."""
    return ODD_CHARACTER(path) is None and "./" not in path and path[-1:] != "."


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PIECES = re.compile(r"[/\\]")
_DOTS = ("", ".", "..")


def _dot_piece(piece: str) -> bool:
    """Whether some server reads this piece of a segment as ``.`` or ``..`` (``..;x``, ``.. ``)."""
    head = piece.partition(";")[0].rstrip(" ")
    return head in (".", "..")


def _hidden_dot_segment(segment: str) -> bool:
    """Whether a segment the index reads as a name is read as ``.`` or ``..`` by some server.

    ``..;``, ``..;x``, ``.;`` (servlet containers), ``..\\x`` (IIS), ``..`` followed by spaces (Windows),
    and, after one more percent-decoding, ``%2e%2e`` and the like (double-decoding servers).
    """
    if segment in _DOTS:
        return False  # the index reads these itself (normalize_path)
    if any(_dot_piece(piece) for piece in segment.split("\\")):
        return True
    if "%" in segment:
        decoded = unquote(segment, errors="surrogateescape")
        if decoded != segment:
            return any(piece in (".", "..") or _dot_piece(piece) for piece in _PIECES.split(decoded))
    return False


def lenient_reading(path: str) -> str:
    """The path as the most lenient server reads it (SPEC §8).

    Anything from a NUL on is removed, a ``%xx`` left in the decoded path is decoded once more (as a
    double-decoding server does), each segment loses its ``;params`` (up to the next ``/``), ``\\`` is
    read as ``/``, each segment loses its trailing dots and spaces, and the result is normalized (``.``,
    ``..``, repeated slashes).

    Example:
        >>> lenient_reading("/v1;a/admin;x=1/list.")
        '/v1/admin/list'
    """
    path = path.partition("\x00")[0]
    if "%" in path:
        path = unquote(path, errors="surrogateescape").partition("\x00")[0]
    # A segment's ;params end at the next "/" (a servlet container knows no "\\"), then "\\" is "/".
    path = "/".join(segment.partition(";")[0] for segment in path.split("/")).replace("\\", "/")
    segments = [segment if segment in _DOTS else segment.rstrip(". ") for segment in path.split("/")]
    return normalize_path("/".join(segments))


def examine(path: str) -> tuple[bool, str | None]:
    """Look at a decoded, normalized path once: ``(refuse, other_reading)``.

    ``refuse`` is true for a path holding a control character or a segment some server reads as
    ``.``/``..`` while the index does not; ``other_reading`` is :func:`lenient_reading` when it differs
    from ``path`` (else ``None``). A clean path costs one scan and gives ``(False, None)``.
    """
    if plain(path):
        return False, None
    if _CONTROL.search(path) is not None:
        return True, None
    if any(_hidden_dot_segment(segment) for segment in path.split("/")):
        return True, None
    lenient = lenient_reading(path)
    return False, (lenient if lenient != path else None)


def cut_fragment(path: str, raw: bytes | str | None) -> str:
    """``path`` without the fragment a raw request target carried (``/admin#/x`` is ``/admin``).

    A ``#`` never stands in a request target (RFC 9112 §3.2); some servers pass it on, with what
    follows, in the path. Only a ``#`` that stood as such in ``raw`` is cut: one decoded from ``%23``
    belongs to the path. ``raw`` is the target as received (query string or not), when the server
    tells it.
    """
    if raw is None:
        return path
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    at = text.find("#")
    if at < 0:
        return path
    cut = -1
    for _ in range(text[:at].lower().count("%23") + 1):
        cut = path.find("#", cut + 1)
        if cut < 0:
            return path  # the server cut it already
    return path[:cut]
