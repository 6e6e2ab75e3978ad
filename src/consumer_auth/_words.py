"""Counted nouns for messages: ``1 route``, ``2 routes``."""

from __future__ import annotations

__all__ = ["counted"]


def counted(number: int, noun: str) -> str:
    """``number`` and ``noun``, plural unless the number is 1 (``counted(1, "route") == "1 route"``)."""
    return f"{number} {noun}{'' if number == 1 else 's'}"
