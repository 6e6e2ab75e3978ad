"""The apps ``test_server_matrix.py`` serves on real servers, as ``matrix_apps:<name>``.

A server process imports this module (``tests/`` on ``PYTHONPATH``) with ``CONSUMER_AUTH_MATRIX_CONFIG``
naming a JSON file ``{"gateway": <configuration>, "upstream": <URL>}``; the four ways of running the
gateway are then attributes a server can name on its command line:

- ``asgi_middleware``: the ASGI middleware in front of the echo app of the conformance table;
- ``asgi_proxy``: the ASGI proxy, forwarding to ``upstream``;
- ``wsgi_middleware``: the WSGI middleware in front of the WSGI echo app;
- ``wsgi_proxy``: the WSGI proxy, forwarding to ``upstream``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from consumer_auth import Gateway
from support import echo_asgi, echo_wsgi

CONFIG_ENV = "CONSUMER_AUTH_MATRIX_CONFIG"

_document: dict[str, Any] = (
    json.loads(Path(os.environ[CONFIG_ENV]).read_text()) if CONFIG_ENV in os.environ else {}
)

if _document:  # a server process (the test module imports this module only for CONFIG_ENV)
    _gateway = Gateway.from_dict(_document["gateway"])
    asgi_middleware = _gateway.asgi(echo_asgi)
    asgi_proxy = _gateway.asgi_proxy(upstream=_document["upstream"])
    wsgi_middleware = _gateway.wsgi(echo_wsgi)
    wsgi_proxy = _gateway.wsgi_proxy(upstream=_document["upstream"])
