"""What brute-force limits and decision logs cost per request, against the plain path in the same run.

Run: ``.venv/bin/python benchmarks/security_overhead.py`` (Redis on 127.0.0.1:6379 for the Redis row).

Each row decides the guide's authenticated request (alex / 123456, plaintext credential) in-process with
``Gateway.decide_now`` and reports the best of several repeats, in microseconds, and its ratio to the
plain row (brute-force off, auth log off).
"""

from __future__ import annotations

import base64
import logging
import timeit
import uuid
from collections.abc import Callable
from typing import Any

from consumer_auth import Gateway, RedisFailureStore, RequestFacts

NUMBER = 20_000
REPEAT = 7


def _document(brute_force: bool) -> dict[str, Any]:
    plugin: dict[str, Any] = {"brute_force": {"max_failures": 5}} if brute_force else {}
    return {
        "consumers": [
            {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}}
        ],
        "routes": [{"id": "json", "uri": "/json", "plugins": {"basic-auth": plugin}}],
    }


FACTS = RequestFacts(
    "GET", "/json", "example.com", ("Basic " + base64.b64encode(b"alex:123456").decode(),), "192.0.2.1"
)


def best(run: Callable[[], object], number: int = NUMBER) -> float:
    """Microseconds per call, best of REPEAT."""
    return min(timeit.repeat(run, number=number, repeat=REPEAT)) / number * 1e6


def main() -> None:
    auth_log = logging.getLogger("consumer_auth.auth")
    auth_log.propagate = False
    auth_log.addHandler(logging.NullHandler())

    plain = Gateway.from_dict(_document(False))
    limited = Gateway.from_dict(_document(True))
    rows: list[tuple[str, float]] = []

    auth_log.setLevel(logging.WARNING)
    rows.append(("plain (brute-force off, auth log off)", best(lambda: plain.decide_now(FACTS))))
    rows.append(("brute-force, memory store", best(lambda: limited.decide_now(FACTS))))
    auth_log.setLevel(logging.INFO)
    rows.append(("auth log on (NullHandler)", best(lambda: plain.decide_now(FACTS))))
    auth_log.setLevel(logging.WARNING)

    try:
        store = RedisFailureStore(key_prefix=f"bench-{uuid.uuid4().hex}:")
        store.retry_after(["probe"])
        redis_gateway = Gateway.from_dict(_document(True))
        redis_gateway.brute_force_store = store
        rows.append(
            ("brute-force, Redis store (loopback)", best(lambda: redis_gateway.decide_now(FACTS), 2_000))
        )
        store.close()
    except Exception as error:  # noqa: BLE001 - the row is optional
        print(f"(Redis row skipped: {type(error).__name__})")

    baseline = rows[0][1]
    print(f"{'case':42} {'µs/request':>11} {'ratio':>7}")
    for name, micros in rows:
        print(f"{name:42} {micros:11.2f} {micros / baseline:7.2f}")


if __name__ == "__main__":
    main()
