"""What Prometheus metrics cost per request: direct ASGI/WSGI calls, no server, no sockets.

The guide's route through ``gateway.wsgi(app)`` / ``gateway.asgi(app)``, metrics off, against the same
gateway with ``metrics=Metrics(...)`` (a registry of its own), interleaved rounds, the median of the
per-round times. An authenticated request (200) and a rejected one (401, which also looks its route up
for the label) are both measured.
"""

from __future__ import annotations

import asyncio
from typing import Any

from _common import Result, Target, interleaved, median, us
from inprocess import asgi_timer, bare_asgi, bare_wsgi, gateway, wsgi_timer

from consumer_auth.metrics import Metrics


def _without_authorization_wsgi(app: Any) -> Any:
    def call(environ: Any, start_response: Any) -> Any:
        environ.pop("HTTP_AUTHORIZATION", None)
        statuses: list[str] = []

        def start(line: str, headers: Any, exc_info: Any = None) -> Any:
            statuses.append(line)
            return start_response("200 OK" if line.startswith("401") else line, headers, exc_info)

        return app(environ, start)

    return call


def run(quick: bool = False) -> Result:
    calls, rounds = (500, 5) if quick else (3_000, 15)
    plain = gateway(None)
    metered_wsgi = plain.wsgi(bare_wsgi, metrics=Metrics(None))
    off_wsgi = plain.wsgi(bare_wsgi)
    loop = asyncio.new_event_loop()
    try:
        asgi = interleaved(
            {
                "off": asgi_timer(plain.asgi(bare_asgi), loop, calls),
                "on": asgi_timer(plain.asgi(bare_asgi, metrics=Metrics(None)), loop, calls),
            },
            rounds,
        )
    finally:
        loop.close()
    wsgi = interleaved(
        {"off": wsgi_timer(off_wsgi, calls), "on": wsgi_timer(metered_wsgi, calls)},
        rounds,
    )
    rejected = interleaved(
        {
            "off": wsgi_timer(_without_authorization_wsgi(off_wsgi), calls),
            "on": wsgi_timer(_without_authorization_wsgi(metered_wsgi), calls),
        },
        rounds,
    )
    result = Result(
        "Metrics on vs off (in-process)",
        f"Direct ASGI/WSGI calls of the guide's route, {calls:,} requests per sample, {rounds} interleaved "
        "rounds; time per request, median of the rounds; ratio = on / off (`benchmarks/metrics.py`).",
        header=["adapter", "request", "metrics off", "metrics on", "ratio"],
    )
    ratios = {}
    for name, request, samples in (
        ("ASGI", "200 alex", asgi),
        ("WSGI", "200 alex", wsgi),
        ("WSGI", "401 no credentials", rejected),
    ):
        off, on = median(samples["off"]), median(samples["on"])
        ratios[name, request] = median([b / a for a, b in zip(samples["off"], samples["on"], strict=True)])
        result.table.append([name, request, us(off), us(on), f"{ratios[name, request]:.2f}×"])
    result.notes.append(
        "What a request costs with metrics on: two clock reads, a `start_response` (WSGI) or `send` (ASGI) "
        "wrapper to see the status, and one count plus one histogram bucket under one lock, the series found "
        "by the identity of the decision (the gateway reuses its `Allow` and `Reject` objects). A rejection "
        "also looks its route up again for the `route` label, hence the higher 401 row. `prometheus_client`'s "
        "own metric objects (about 2.5 µs a request for the three updates) are used only in its multiprocess "
        "mode (`serve --workers N`)."
    )
    result.targets += [
        Target("ASGI metrics on vs off", ratios["ASGI", "200 alex"], 1.3, "<="),
        Target("WSGI metrics on vs off", ratios["WSGI", "200 alex"], 1.3, "<="),
    ]
    return result
