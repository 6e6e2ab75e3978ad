"""What following a store costs: reloading a snapshot, and requests served while reloads happen.

Run: ``.venv/bin/python benchmarks/store.py [CONSUMERS]``. Prints each measurement with its baseline,
measured in the same run:

- snapshot: ``SQLStore.load()`` of N consumers, the first time (read every row, validate everything) and
  again (unchanged consumers reused), against ``Gateway.from_dict`` of the same documents (the same
  validation without a database);
- requests: gateway decisions per second while a writer changes the store every 50 ms and the watcher
  reloads, against the same gateway with the store idle (the ratio shows whether reloads slow requests).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import argon2

from consumer_auth import Gateway, RequestFacts
from consumer_auth.store import SQLStore

ROUTES = [{"uri": "/json", "plugins": {"basic-auth": {}}}]


def median_seconds(action: Callable[[], object], runs: int = 7) -> float:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def decisions_per_second(gateway: Gateway, seconds: float = 2.0) -> float:
    # A request without credentials: routing and the 401, no hashing, so the measure is the request path.
    facts = RequestFacts("GET", "/json", "localhost", ())
    count, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(1000):
            gateway.decide_now(facts)
        count += 1000
    return count / seconds


def main(consumers: int) -> None:
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    digest = hasher.hash("pw")  # one hash for all: parsing, not hashing, is what a reload costs
    documents: list[dict[str, Any]] = [
        {
            "username": f"user{i}",
            "plugins": {"basic-auth": {"username": f"login{i}", "password_hash": digest}},
        }
        for i in range(consumers)
    ]
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'bench.db'}"
        store = SQLStore(url)
        store.put_resources(("consumers", d["username"], d) for d in documents)
        store.put_resource("routes", "json", ROUTES[0])

        def cold() -> None:
            fresh = SQLStore(url)
            fresh.load()
            fresh.close()

        store.load()
        warm = median_seconds(store.load)
        first = median_seconds(cold)
        parse = median_seconds(lambda: Gateway.from_dict({"consumers": documents, "routes": ROUTES}))
        print(
            f"snapshot of {consumers} consumers: first load {first * 1000:.1f} ms, "
            f"reload with unchanged consumers reused {warm * 1000:.1f} ms; "
            f"baseline Gateway.from_dict {parse * 1000:.1f} ms "
            f"(ratios {first / parse:.2f} and {warm / parse:.2f})"
        )

        gateway = Gateway.from_store(url, poll_interval=0.01)
        idle = decisions_per_second(gateway)
        stop = threading.Event()
        writes = 0

        def writer() -> None:
            nonlocal writes
            while not stop.is_set():
                store.put_resource("consumers", "churn", {"desc": str(writes)})
                writes += 1
                stop.wait(0.05)

        thread = threading.Thread(target=writer)
        thread.start()
        busy = decisions_per_second(gateway)
        stop.set()
        thread.join()
        reloads = gateway.watcher.revision if gateway.watcher else None
        gateway.close()
        store.close()
        print(
            f"decisions/s: idle store {idle:,.0f}, store changing every 50 ms {busy:,.0f} "
            f"(ratio {busy / idle:.2f}; {writes} writes, revision {reloads} applied)"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
