"""The ``"django"`` store against the SQL store: what a reload and a revision check cost.

The same 2,000 consumers (one credential each, one argon2id hash shared: a reload parses hashes, it never
computes one) in a SQLite file read through Django's ORM (``DjangoStore``) and in a SQLite file read
through SQLAlchemy Core (``SQLStore``, the baseline). Measured, interleaved round by round: the first
``load()`` (every consumer validated), a reload with nothing changed (unchanged consumers reused), and
``revision()`` (the query every process makes once per ``poll_interval``).

Run: ``python benchmarks/django_store.py`` (``--quick`` for fewer rounds). Not part of ``make bench``:
it configures Django for its own process.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import interleaved, median

CONSUMERS = 2_000


def main(quick: bool = False) -> None:
    import argon2
    import django
    from django.conf import settings
    from django.core.management import call_command

    directory = Path(tempfile.mkdtemp(prefix="consumer-auth-bench-"))
    settings.configure(
        INSTALLED_APPS=["consumer_auth.contrib.django"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(directory / "django.db")}},
        USE_TZ=True,
    )
    django.setup()
    from consumer_auth.contrib.django.models import BasicAuthCredential, Consumer
    from consumer_auth.contrib.django.store import DjangoStore, changed
    from consumer_auth.store import SQLStore

    call_command("migrate", verbosity=0)
    digest = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    consumers = Consumer.objects.bulk_create(Consumer(name=f"user{i}") for i in range(CONSUMERS))
    BasicAuthCredential.objects.bulk_create(
        BasicAuthCredential(consumer=c, username=f"login{i}", password_hash=digest)
        for i, c in enumerate(consumers)
    )
    changed()
    sql_url = f"sqlite:///{directory / 'sql.db'}"
    sql = SQLStore(sql_url)
    sql.put_resources(
        (
            "consumers",
            f"user{i}",
            {"plugins": {"basic-auth": {"username": f"login{i}", "password_hash": digest}}},
        )
        for i in range(CONSUMERS)
    )
    ours = DjangoStore()
    ours.load()
    sql.load()

    def timed(action: Callable[[], object], calls: int = 1) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            action()
        return (time.perf_counter() - started) / calls

    def first(make: Callable[[], DjangoStore | SQLStore]) -> Callable[[], float]:
        def measure() -> float:
            store = make()
            try:
                return timed(store.load)
            finally:
                store.close()

        return measure

    rounds = 3 if quick else 9
    samples = interleaved(
        {
            "sql first": first(lambda: SQLStore(sql_url)),
            "django first": first(DjangoStore),
            "sql again": lambda: timed(sql.load),
            "django again": lambda: timed(ours.load),
            "sql revision": lambda: timed(sql.revision, 200),
            "django revision": lambda: timed(ours.revision, 200),
        },
        rounds,
    )
    print(
        f"{CONSUMERS:,} consumers, SQLite, medians of {rounds} interleaved rounds (python benchmarks/django_store.py)"
    )
    print("| measure | SQLStore (baseline) | DjangoStore | ratio |")
    print("|---|---|---|---|")
    for label, key, unit, scale in (
        ("first `load()`", "first", "ms", 1e3),
        ("reload, nothing changed", "again", "ms", 1e3),
        ("`revision()`", "revision", "µs", 1e6),
    ):
        base, mine = median(samples[f"sql {key}"]), median(samples[f"django {key}"])
        print(f"| {label} | {base * scale:.1f} {unit} | {mine * scale:.1f} {unit} | {mine / base:.2f}× |")
    ours.close()
    sql.close()


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
