"""The ASGI proxy of the configuration file named by ``CONSUMER_AUTH_BENCH_CONFIG``, for running the
gateway's own app on other servers (``front.py``)."""

from __future__ import annotations

import os

from consumer_auth import Gateway

app = Gateway.from_file(os.environ["CONSUMER_AUTH_BENCH_CONFIG"]).asgi_proxy()
