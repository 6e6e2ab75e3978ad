"""Fixtures shared by every test module."""

from __future__ import annotations

import pytest

from support import IN_PROCESS_MODES, Mode


@pytest.fixture(params=sorted(IN_PROCESS_MODES), ids=lambda name: name)
def mode(request: pytest.FixtureRequest) -> Mode:
    """Every way of running a gateway; the conformance table runs once per mode."""
    name: str = request.param
    return Mode(name, IN_PROCESS_MODES[name])
