"""``Gateway.decide`` per request for the paths SPEC §8 reads: clean ones, and ones with odd characters.

Prints one tab-separated row per case (``decide  <case>  <µs>``), the median of interleaved rounds; made
to be compared across two source trees with ``ab.py``:

    ../.venv/bin/python ab.py --base /tmp/base/src decide
"""

from __future__ import annotations

import base64
import sys
import time
from collections.abc import Callable

from _common import interleaved, median, us

from consumer_auth import Gateway
from consumer_auth.decision import RequestFacts

ALEX = "Basic " + base64.b64encode(b"alex:123456").decode()
CONFIG = {
    "unmatched": "pass",
    "consumers": [
        {"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": "123456"}}}
    ],
    "services": [{"id": "app", "path_prefix": "/v1"}],
    "routes": [
        {
            "id": "json",
            "service_id": "app",
            "uri": "/json",
            "methods": ["GET"],
            "plugins": {"basic-auth": {}},
        },
        {"id": "files", "service_id": "app", "uri": "/files/*", "plugins": {"basic-auth": {}}},
        {"id": "pub", "uri": "/pub/*"},
    ],
}
CASES = {
    "exact, credentials": RequestFacts("GET", "/v1/json", "example.com", (ALEX,)),
    "prefix with a file extension, credentials": RequestFacts("GET", "/v1/files/a/b.txt", "x", (ALEX,)),
    "public prefix": RequestFacts("GET", "/pub/a/b", "x"),
    "public prefix, ;params": RequestFacts("GET", "/pub/a;b/c", "x"),
    "unmatched (passed)": RequestFacts("GET", "/health", "x"),
}


def timer(gateway: Gateway, facts: RequestFacts, calls: int) -> Callable[[], float]:
    decide = gateway.decide_now

    def measure() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            decide(facts)
        return (time.perf_counter() - start) / calls

    return measure


def main(quick: bool) -> None:
    calls, rounds = (2_000, 5) if quick else (20_000, 11)
    gateway = Gateway.from_dict(CONFIG)
    samples = interleaved({name: timer(gateway, facts, calls) for name, facts in CASES.items()}, rounds)
    for name in CASES:
        print("decide", name, us(median(samples[name])), sep="\t")


if __name__ == "__main__":
    main("--quick" in sys.argv)
