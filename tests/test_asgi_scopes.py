"""ASGI scopes in the shapes real servers give them, through the ASGI middleware and the ASGI proxy.

Servers differ on what the ASGI spec leaves open: granian gives ports as strings, a server on a unix
socket gives ``server`` as ``(path, None)`` and ``client`` as ``None``, some give lists where others give
tuples, and ``root_path``, ``raw_path``, ``client`` and ``server`` may be absent. Each shape must get
the guide's answers byte for byte (the proxy forwarding to a real upstream on loopback).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import configs
import proxy_modes
from consumer_auth import Gateway
from consumer_auth.proxy._plan import port_number
from support import ABSENT, Reply, basic, call_asgi, echo_asgi

ALEX = basic("alex", "123456")
MISSING = b'{"message":"Missing authorization in request"}\n'
CHALLENGE = "Basic realm='.'"
GUIDE_HEADERS = [(b"host", b"example.com"), (b"authorization", ALEX.encode())]

# id, scope changes, the X-Forwarded-Port the upstream sees, its X-Real-IP (None: absent)
SHAPES = [
    pytest.param({}, "80", "127.0.0.1", id="tuples"),
    pytest.param(
        {"server": ("127.0.0.1", "8000"), "client": ("127.0.0.1", "50000"), "root_path": ABSENT},
        "8000",
        "127.0.0.1",
        id="granian-string-ports",
    ),
    pytest.param(
        {
            "server": ["127.0.0.1", 8000],
            "client": ["127.0.0.1", 50000],
            "headers": [list(header) for header in GUIDE_HEADERS],
        },
        "8000",
        "127.0.0.1",
        id="lists",
    ),
    pytest.param({"headers": tuple(GUIDE_HEADERS)}, "80", "127.0.0.1", id="headers-tuple"),
    pytest.param({"server": ("/run/app.sock", None), "client": None}, "80", None, id="unix-socket"),
    pytest.param({"server": None, "client": None}, "80", None, id="none"),
    pytest.param(
        {"server": ABSENT, "client": ABSENT, "root_path": ABSENT, "raw_path": ABSENT},
        "80",
        None,
        id="optional-keys-absent",
    ),
    pytest.param({"server": ("127.0.0.1", "not-a-port")}, "80", "127.0.0.1", id="garbled-port"),
]


def _shaped(changes: dict[str, Any], *, credentials: bool = True) -> dict[str, Any]:
    """The scope changes with the guide's headers where the shape sets none of its own; without
    ``Authorization`` (in the shape's own container type) unless ``credentials``."""
    headers = changes.get("headers", list(GUIDE_HEADERS))
    if not credentials:
        headers = type(headers)(header for header in headers if header[0] != b"authorization")
    return {**changes, "headers": headers}


async def _both(app: Any, changes: dict[str, Any], *, proxy: bool) -> tuple[Reply, Reply]:
    """alex's request and the one without credentials, in one scope shape."""
    try:
        allowed = await call_asgi(app, "GET", "/v1/json", [], scope_changes=_shaped(changes))
        missing = await call_asgi(
            app, "GET", "/v1/json", [], scope_changes=_shaped(changes, credentials=False)
        )
        return allowed, missing
    finally:
        if proxy:
            await app.aclose()


@pytest.mark.parametrize(("changes", "port", "real_ip"), SHAPES)
def test_asgi_proxy_takes_every_scope_shape(changes: dict[str, Any], port: str, real_ip: str | None) -> None:
    upstream = proxy_modes.echo_upstream().url
    proxy = Gateway.from_dict(proxy_modes.proxied("guide", upstream)).asgi_proxy(upstream=upstream)
    allowed, missing = asyncio.run(_both(proxy, changes, proxy=True))
    seen = allowed.seen()
    assert (seen["path"], seen["consumer"]) == ("/json", "alex")
    assert seen["headers"]["authorization"] == ALEX
    assert seen["headers"]["x-forwarded-port"] == port
    assert seen["headers"].get("x-real-ip") == real_ip
    assert seen["headers"].get("x-forwarded-for") == real_ip
    assert (missing.status, missing.body, missing.headers["www-authenticate"]) == (401, MISSING, CHALLENGE)


@pytest.mark.parametrize(("changes", "port", "real_ip"), SHAPES)
def test_asgi_middleware_takes_every_scope_shape(
    changes: dict[str, Any], port: str, real_ip: str | None
) -> None:
    allowed, missing = asyncio.run(_both(configs.gateway("guide").asgi(echo_asgi), changes, proxy=False))
    seen = allowed.seen()
    assert (seen["path"], seen["mount"], seen["consumer"]) == ("/json", "/v1", "alex")
    assert seen["headers"]["x-consumer-username"] == "alex"
    assert (missing.status, missing.body, missing.headers["www-authenticate"]) == (401, MISSING, CHALLENGE)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(8000, 8000, id="int"),
        pytest.param("8000", 8000, id="str"),
        pytest.param(b"8000", 8000, id="bytes"),
        pytest.param(None, None, id="none"),
        pytest.param("", None, id="empty"),
        pytest.param("80a", None, id="not-digits"),
        pytest.param("٨٠", None, id="non-ascii-digits"),
        pytest.param(0, None, id="zero"),
        pytest.param(70000, None, id="too-large"),
        pytest.param(True, None, id="bool"),
        pytest.param(8000.0, None, id="float"),
    ],
)
def test_port_number(value: object, expected: int | None) -> None:
    assert port_number(value) == expected
