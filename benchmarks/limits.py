"""What ``limit-count`` (``policy: local``) costs per request, against the same route without it.

The guide's route (``basic-auth``, alex / 123456, a plaintext credential) with and without a
``limit-count`` plugin whose count is never reached (every request is counted and answered with the
``X-RateLimit-*`` headers, none rejected), measured three ways in interleaved rounds: direct ASGI calls
(``gateway.asgi(app)``), direct WSGI calls (``gateway.wsgi(app)``), and ``Gateway.decide_now`` alone (the
decision without an adapter). The ratios are whole requests with the plugin ÷ without it. A last row
times ``policy: redis`` with ``decide_now`` (its Redis round trip runs inline there), when the Redis on
127.0.0.1:6379 answers.
"""

from __future__ import annotations

import asyncio
import base64
import sys
import uuid
from collections.abc import Callable
from typing import Any

from _common import REDIS_URL, Result, Target, interleaved, median, per_call, redis_unavailable, us
from inprocess import asgi_timer, bare_asgi, bare_wsgi, wsgi_timer

from consumer_auth import Allow, Gateway, RequestFacts

FACTS = RequestFacts(
    "GET", "/x", "localhost", ("Basic " + base64.b64encode(b"alex:123456").decode(),), "127.0.0.1"
)


def gateway(limited: bool, **policy: Any) -> Gateway:
    plugins: dict[str, Any] = {"basic-auth": {}}
    if limited:
        plugins["limit-count"] = {"count": 10**12, "time_window": 3600, **policy}
    return Gateway.from_dict(
        {
            "consumers": [
                {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}}
            ],
            "routes": [{"id": "x", "uri": "/x", "methods": ["GET"], "plugins": plugins}],
        }
    )


def _forget(prefix: str) -> None:
    """Delete the benchmark's Redis keys."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def run(quick: bool = False) -> Result:
    plain, limited = gateway(False), gateway(True)
    decision = limited.decide_now(FACTS)
    assert isinstance(decision, Allow) and decision.response_headers, decision  # noqa: PT018
    calls = 1_000 if quick else 3_000
    rounds = 5 if quick else 15
    loop = asyncio.new_event_loop()
    shared: Gateway | None = None
    prefix = f"bench-{uuid.uuid4().hex}:"
    try:
        variants: dict[str, Callable[[], float]] = {
            "ASGI without": asgi_timer(plain.asgi(bare_asgi), loop, calls),
            "ASGI with limit-count": asgi_timer(limited.asgi(bare_asgi), loop, calls),
            "WSGI without": wsgi_timer(plain.wsgi(bare_wsgi), calls),
            "WSGI with limit-count": wsgi_timer(limited.wsgi(bare_wsgi), calls),
            "decide_now without": lambda: per_call(lambda: plain.decide_now(FACTS), calls),
            "decide_now with limit-count": lambda: per_call(lambda: limited.decide_now(FACTS), calls),
        }
        missing = redis_unavailable()
        if missing is None:
            shared = gateway(True, policy="redis", redis_host="127.0.0.1", redis_prefix=prefix)
            assert isinstance(shared.decide_now(FACTS), Allow)
            redis = shared
            variants["decide_now with limit-count, policy redis"] = lambda: per_call(
                lambda: redis.decide_now(FACTS), calls // 10
            )
        samples = interleaved(variants, rounds)
    finally:
        loop.close()
        if shared is not None:
            _forget(prefix)
    medians = {name: median(values) for name, values in samples.items()}
    result = Result(
        "limit-count",
        f"The guide's route with and without `limit-count` (`policy: local`, never reached), {calls:,} "
        f"requests per sample, {rounds} interleaved rounds, medians; valid credentials, every answer 200.",
        header=["call", "without", "with limit-count", "with ÷ without"],
    )
    for kind in ("ASGI", "WSGI", "decide_now"):
        without, with_ = medians[f"{kind} without"], medians[f"{kind} with limit-count"]
        result.table.append([kind, us(without), us(with_), f"{with_ / without:.2f}×"])
        if kind != "decide_now":
            result.targets.append(
                Target(f"{kind} request with limit-count (local) vs without", with_ / without, 1.3, "<=")
            )
    result.notes.append(
        "Where the difference goes: the route without the plugin answers from the basic-auth shortcut with "
        "one cached `Allow`; with it, every request runs `limit-count`'s quick form (no `PluginRequest`: "
        "the client address, one count in memory, the three header values), gets an `Allow` of its own "
        "carrying its three headers (as text, and as the bytes ASGI sends, so no adapter encodes them), and the "
        "adapter adds them to the app's answer."
    )
    if missing is None:
        without, with_ = medians["decide_now without"], medians["decide_now with limit-count, policy redis"]
        result.table.append(["decide_now, policy redis", us(without), us(with_), f"{with_ / without:.2f}×"])
        result.notes.append("The policy redis row includes one loopback round trip to Redis per request.")
    else:
        result.notes.append(f"The policy redis row not run: {missing}.")
    return result


if __name__ == "__main__":
    outcome = run(quick="--quick" in sys.argv)
    for row in outcome.table:
        print(*row, sep="\t")
    for target in outcome.targets:
        print(target.describe())
    for note in outcome.notes:
        print(note)
