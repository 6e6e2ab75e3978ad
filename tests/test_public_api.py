"""The public surface (SPEC §7): stable names, sorted ``__all__``, no framework imported by the package."""

from __future__ import annotations

import subprocess
import sys

import consumer_auth

SPEC_NAMES = {"Consumer", "BasicAuthPlugin", "Route", "Service", "Gateway", "protect"}


def test_all_is_sorted_and_complete() -> None:
    assert consumer_auth.__all__ == sorted(consumer_auth.__all__)
    assert set(consumer_auth.__all__) >= SPEC_NAMES
    for name in consumer_auth.__all__:
        assert hasattr(consumer_auth, name), name


def test_gateway_entry_points() -> None:
    for name in ("from_dict", "from_file", "wsgi", "asgi"):
        assert callable(getattr(consumer_auth.Gateway, name))


def test_public_objects_have_docstrings() -> None:
    for name in consumer_auth.__all__:
        obj = getattr(consumer_auth, name)
        if callable(obj) and not isinstance(obj, type(consumer_auth)):
            assert obj.__doc__, name


def test_importing_the_package_imports_no_framework_and_no_asyncio() -> None:
    code = (
        "import sys, consumer_auth; "
        "bad = [m for m in ('flask', 'django', 'fastapi', 'starlette', 'asyncio', 'httpx', 'aiohttp') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
