"""Fixtures shared by every test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import contrib_modes  # noqa: F401 - registers the framework integrations in MODES
import proxy_modes  # noqa: F401 - registers the proxy modes in support.MODES
import proxy_servers
from support import MODES, Mode

_made: dict[str, Mode] = {}


@pytest.fixture(params=sorted(MODES), ids=lambda name: name)
def mode(request: pytest.FixtureRequest) -> Mode:
    """Every way of running a gateway; the conformance table runs once per mode."""
    name: str = request.param
    if name not in _made:
        _made[name] = MODES[name]()
    return _made[name]


@pytest.fixture(scope="session", autouse=True)
def _stop_servers() -> Iterator[None]:
    """Stop the loopback servers the proxy tests started, at the end of the session."""
    yield
    proxy_servers.stop_all()
