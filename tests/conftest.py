"""Fixtures shared by every test module."""

from __future__ import annotations

import pytest

import contrib_modes  # noqa: F401 - registers the framework integrations in MODES
from support import MODES, Mode

_made: dict[str, Mode] = {}


@pytest.fixture(params=sorted(MODES), ids=lambda name: name)
def mode(request: pytest.FixtureRequest) -> Mode:
    """Every way of running a gateway; the conformance table runs once per mode."""
    name: str = request.param
    if name not in _made:
        _made[name] = MODES[name]()
    return _made[name]
