"""Following a store: what a reload costs, and whether requests slow down while reloads happen.

- Snapshot: ``SQLStore.load()`` of 2,000 consumers (SQLite), the first time (every row validated) and again
  (consumers whose stored text did not change are reused), against ``Gateway.from_dict`` of the same
  documents: the same validation without a database.
- Requests: gateway decisions per second (a request without credentials: routing and the 401, no hashing)
  with the store idle, and with a writer in the same process changing one consumer as often as it gets the
  interpreter (at most every 50 ms) while the watcher reloads.
  Requests never wait on the store; the ratio shows what the reload thread costs them in CPU.
- PostgreSQL propagation (when a PostgreSQL answers at ``$CONSUMER_AUTH_TEST_POSTGRES``, by default
  ``postgresql://postgres@127.0.0.1:5432/test``): how long a password change written to the store takes to
  reach a gateway following it (``LISTEN/NOTIFY``), against the one second the deployment guide promises.
  ``tests/test_store_postgres.py`` checks that changes arrive; this measures how fast.

Run alone: ``python benchmarks/store.py``; or ``make bench BENCH_ARGS='--only store'``.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import argon2
from _common import Result, Target, interleaved, median

from consumer_auth import Allow, Gateway, RequestFacts
from consumer_auth.store import SQLStore

CONSUMERS = 2_000
ROUTES = [{"uri": "/json", "plugins": {"basic-auth": {}}}]


def _documents(count: int) -> list[dict[str, Any]]:
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    digest = hasher.hash("pw")  # one hash for all: a reload parses hashes, it never computes one
    return [
        {
            "username": f"user{i}",
            "plugins": {"basic-auth": {"username": f"login{i}", "password_hash": digest}},
        }
        for i in range(count)
    ]


def _timed(action: Any) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _decisions_per_second(gateway: Gateway, seconds: float) -> float:
    facts = RequestFacts("GET", "/json", "localhost", ())
    count, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(1_000):
            gateway.decide_now(facts)
        count += 1_000
    return count / seconds


POSTGRES = os.environ.get("CONSUMER_AUTH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _propagation(rounds: int) -> list[float] | str:
    """Seconds from each password change written to PostgreSQL to a gateway following the store honouring
    it; without a PostgreSQL to measure on, why not."""
    try:
        import psycopg
    except ImportError:
        return "the `psycopg` package is not installed (it comes with `pip install -e '.[bench]'`)"
    try:
        with psycopg.connect(POSTGRES, connect_timeout=3):
            pass
    except psycopg.Error as error:
        return f"no PostgreSQL answered at {POSTGRES} ({type(error).__name__})"
    schema = f"consumer_auth_bench_{uuid.uuid4().hex[:12]}"
    hasher = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    store = SQLStore(f"{POSTGRES}?schema={schema}")
    gateway: Gateway | None = None
    try:
        store.put_resource("routes", "json", ROUTES[0])

        def set_password(password: str) -> None:
            document = {
                "plugins": {"basic-auth": {"username": "alex", "password_hash": hasher.hash(password)}}
            }
            store.put_resource("consumers", "alex", document)

        set_password("pw-0")
        gateway = Gateway.from_store(store)
        delays = []
        for index in range(1, rounds + 1):
            facts = RequestFacts("GET", "/json", "localhost", (f"Basic {_basic('alex', f'pw-{index}')}",))
            started = time.perf_counter()
            set_password(f"pw-{index}")
            while not isinstance(gateway.decide_now(facts), Allow):
                if time.perf_counter() - started > 30:
                    raise RuntimeError("a change did not reach the gateway within 30 s")
                time.sleep(0.001)
            delays.append(time.perf_counter() - started)
        return delays
    finally:
        if gateway is not None:
            gateway.close()
        else:
            store.close()
        with psycopg.connect(POSTGRES, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def _basic(login: str, password: str) -> str:
    import base64

    return base64.b64encode(f"{login}:{password}".encode()).decode()


def run(quick: bool = False) -> Result:
    documents = _documents(CONSUMERS)
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'bench.db'}"
        store = SQLStore(url)
        store.put_resources(("consumers", d["username"], d) for d in documents)
        store.put_resource("routes", "json", ROUTES[0])
        store.load()

        def first_load() -> float:
            fresh = SQLStore(url)
            try:
                return _timed(fresh.load)
            finally:
                fresh.close()

        loads = interleaved(
            {
                "first": first_load,
                "again": lambda: _timed(store.load),
                "baseline": lambda: _timed(
                    lambda: Gateway.from_dict({"consumers": documents, "routes": ROUTES})
                ),
            },
            3 if quick else 9,
        )
        first, again, baseline = (median(loads[name]) for name in ("first", "again", "baseline"))

        gateway = Gateway.from_store(url, poll_interval=0.01)
        churning = threading.Event()
        stop = threading.Event()
        writes = 0

        def writer() -> None:
            nonlocal writes
            while not stop.is_set():
                if churning.is_set():
                    store.put_resource("consumers", "churn", {"desc": str(writes)})
                    writes += 1
                stop.wait(0.05)

        thread = threading.Thread(target=writer)
        thread.start()
        seconds = 0.5 if quick else 2.0

        def idle() -> float:
            churning.clear()
            time.sleep(0.1)
            return _decisions_per_second(gateway, seconds)

        def busy() -> float:
            churning.set()
            return _decisions_per_second(gateway, seconds)

        rounds = 3 if quick else 7
        rates = interleaved({"idle": idle, "busy": busy}, rounds)
        stop.set()
        thread.join()
        time.sleep(0.5)
        applied = gateway.watcher.revision if gateway.watcher is not None else None
        latest = store.revision()
        gateway.close()
        store.close()

    idle_rate, busy_rate = median(rates["idle"]), median(rates["busy"])
    result = Result(
        "Following a store",
        f"SQLite store with {CONSUMERS:,} consumers; medians of interleaved rounds (`benchmarks/store.py`).",
        header=["measure", "value", "vs baseline"],
    )
    ms = 1_000
    result.table += [
        ["`Gateway.from_dict` of the same consumers (baseline)", f"{baseline * ms:.1f} ms", "1.00×"],
        ["first `SQLStore.load()`", f"{first * ms:.1f} ms", f"{first / baseline:.2f}×"],
        ["reload, unchanged consumers reused", f"{again * ms:.1f} ms", f"{again / baseline:.2f}×"],
        ["decisions/s, store idle (baseline)", f"{idle_rate:,.0f}", "1.00×"],
        [
            f"decisions/s, store changing ({writes / (rounds * seconds):.1f} changes/s applied)",
            f"{busy_rate:,.0f}",
            f"{busy_rate / idle_rate:.2f}×",
        ],
    ]
    result.notes.append(
        f"{writes} writes during the busy rounds; at the end the gateway served revision {applied} of {latest}."
    )
    delays = _propagation(5 if quick else 20)
    if isinstance(delays, str):
        result.notes.append(f"PostgreSQL propagation not measured: {delays}.")
    else:
        result.table += [
            [
                f"PostgreSQL change to a following gateway, median of {len(delays)}",
                f"{median(delays) * ms:.1f} ms",
                "",
            ],
            ["PostgreSQL change to a following gateway, slowest", f"{max(delays) * ms:.1f} ms", ""],
        ]
        result.targets.append(
            Target("slowest PostgreSQL change to a gateway vs 1 s", max(delays) / 1.0, 1.0, "<=")
        )
    result.targets.append(Target("store reload vs building the gateway", again / baseline, 1.0, "<="))
    result.targets.append(
        Target("decisions/s while the store changes vs idle", busy_rate / idle_rate, 0.7, ">=")
    )
    return result


if __name__ == "__main__":
    outcome = run()
    for row in outcome.table:
        print(" | ".join(row))
    for target in outcome.targets:
        print(target.describe())
    for note in outcome.notes:
        print(note)
