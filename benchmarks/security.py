"""What brute-force limits and decision logs cost per request, against the plain path in the same run.

Each variant decides the guide's authenticated request (alex / 123456, a plaintext credential) in-process
with ``Gateway.decide_now``: brute-force limits off and on (in-memory store, and Redis on 127.0.0.1:6379
when it answers), and the ``consumer_auth.auth`` decision log on (to a ``NullHandler``). Medians of
interleaved rounds; ratios to the plain path.
"""

from __future__ import annotations

import base64
import logging
import sys
import uuid
from collections.abc import Callable
from typing import Any

from _common import Result, interleaved, median, per_call, us

from consumer_auth import Gateway, RedisFailureStore, Reject, RequestFacts

FACTS = RequestFacts(
    "GET", "/json", "example.com", ("Basic " + base64.b64encode(b"alex:123456").decode(),), "192.0.2.1"
)


def _gateway(brute_force: bool) -> Gateway:
    plugin: dict[str, Any] = {"brute_force": {"max_failures": 5}} if brute_force else {}
    return Gateway.from_dict(
        {
            "consumers": [
                {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}}
            ],
            "routes": [{"id": "json", "uri": "/json", "plugins": {"basic-auth": plugin}}],
        }
    )


def _redis_store() -> RedisFailureStore | str:
    """A store on a fresh key prefix of the Redis on 127.0.0.1:6379, or why the Redis row cannot run."""
    try:
        import redis
    except ImportError:
        return "the `redis` package is not installed (it comes with `pip install -e '.[bench]'`)"
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=1).ping()
    except redis.RedisError as error:
        return f"no Redis answered on 127.0.0.1:6379 ({type(error).__name__})"
    return RedisFailureStore(key_prefix=f"bench-{uuid.uuid4().hex}:")


def run(quick: bool = False) -> Result:
    auth_log = logging.getLogger("consumer_auth.auth")
    auth_log.propagate = False
    auth_log.addHandler(logging.NullHandler())
    auth_log.setLevel(logging.WARNING)
    plain, limited = _gateway(False), _gateway(True)
    calls = 2_000 if quick else 20_000

    def logged() -> float:
        auth_log.setLevel(logging.INFO)
        try:
            return per_call(lambda: plain.decide_now(FACTS), calls)
        finally:
            auth_log.setLevel(logging.WARNING)

    variants: dict[str, Callable[[], float]] = {
        "plain": lambda: per_call(lambda: plain.decide_now(FACTS), calls),
        "brute-force, memory store": lambda: per_call(lambda: limited.decide_now(FACTS), calls),
        "decision log on": logged,
    }
    store = _redis_store()
    if not isinstance(store, str):
        shared = _gateway(True)
        shared.brute_force_store = store
        variants["brute-force, Redis store"] = lambda: per_call(lambda: shared.decide_now(FACTS), calls // 10)
    for gateway in (plain, limited):
        assert not isinstance(gateway.decide_now(FACTS), Reject)
    samples = interleaved(variants, 5 if quick else 15)
    if not isinstance(store, str):
        store.close()
    medians = {name: median(values) for name, values in samples.items()}
    result = Result(
        "Brute-force limits and decision logs",
        "`Gateway.decide_now` for an authenticated request (plaintext credential), median of interleaved "
        "rounds; the Redis row includes one loopback round trip per request.",
        header=["variant", "per request", "vs plain"],
    )
    for name, value in medians.items():
        result.table.append([name, us(value), f"{value / medians['plain']:.2f}×"])
    if isinstance(store, str):
        result.notes.append(f"Redis row not run: {store}.")
    return result


if __name__ == "__main__":
    outcome = run(quick="--quick" in sys.argv)
    for row in outcome.table:
        print(*row, sep="\t")
    for note in outcome.notes:
        print(note)
