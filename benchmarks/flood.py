"""Good clients during a flood of wrong passwords for an argon2id user (in-process ASGI, one event loop).

Eight "good" tasks send requests with alex's right password (cached after the first), and, in the flood
windows, 32 more tasks send wrong passwords for alex as fast as they are answered, each costing a real
argon2id verification (library defaults: 64 MiB, 3 passes, 4 lanes). Windows with and without the flood
alternate; the result is good-client requests per second, median of the rounds.

Also measured, for the record: the same with the verification threads at normal CPU priority; a flood
spread over 32 unknown usernames (32 lanes, so the pool's queue is full); and the latency of a *first*
login of another argon2id user (bob, no cached success) in every window.
"""

from __future__ import annotations

import asyncio
import base64
import statistics
import sys
import time
from typing import Any

from _common import Result, Target, median
from inprocess import asgi_scope, bare_asgi

from consumer_auth import BasicAuthPlugin, Consumer, Gateway, Route, hash_password
from consumer_auth.asgi import ASGIGatewayMiddleware, VerificationPool

GOOD_TASKS, FLOOD_TASKS = 8, 32
LABELS = {
    "quiet": "no flood",
    "flood": "flood on alex (verification threads at lower priority, the default)",
    "flood normal priority": "flood on alex, verification threads at normal priority",
    "spread flood": "flood spread over 32 unknown usernames (lower priority)",
    "spread flood normal priority": "flood spread over 32 unknown usernames, normal priority",
}


def header(login: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{login}:{password}".encode())


def request_scope(authorization: bytes) -> dict[str, Any]:
    scope = asgi_scope()
    scope["headers"] = [(b"host", b"example.com"), (b"authorization", authorization)]
    return scope


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class Client:
    """Sends one kind of request in a loop and counts the answers by status."""

    def __init__(self, app: Any, authorization: bytes, client: tuple[str, int] | None = None) -> None:
        self.app = app
        self.scope = request_scope(authorization)
        if client is not None:
            self.scope["client"] = client
        self.statuses: list[int] = []

    async def one(self) -> int:
        status = 0

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await self.app(dict(self.scope), receive, send)
        return status

    async def loop(self, until: float) -> None:
        while time.perf_counter() < until:
            self.statuses.append(await self.one())
            await asyncio.sleep(0)  # a server reads the next request from a socket: other tasks run


async def window(
    app: Any, seconds: float, flood: bool, newcomer: Any = None, spread: bool = False
) -> tuple[float, list[float]]:
    """Good requests per second over one window; first-login latencies when ``newcomer`` is given.

    ``spread``: the flood uses a different unknown username per task instead of alex.
    """
    good = [Client(app, header("alex", "123456")) for _ in range(GOOD_TASKS)]
    logins = [f"intruder{i}" if spread else "alex" for i in range(FLOOD_TASKS)]
    # The flood comes from an address of its own, as an attacker's would: the verification bounds count
    # pending checks per client (docs/security.md), so it must not share the good clients' address.
    attacker = ("192.0.2.66", 40000)
    bad = [Client(app, header(login, "wrong-password"), attacker) for login in logins] if flood else []
    start = time.perf_counter()
    until = start + seconds
    latencies: list[float] = []

    async def first_logins() -> None:
        while time.perf_counter() < until:
            began = time.perf_counter()
            assert await newcomer.one() == 200
            latencies.append(time.perf_counter() - began)

    good_tasks = [asyncio.create_task(c.loop(until)) for c in good]
    flood_tasks = [asyncio.create_task(c.loop(until)) for c in bad]
    newcomer_task = asyncio.create_task(first_logins()) if newcomer is not None else None
    await asyncio.gather(*good_tasks)
    elapsed = time.perf_counter() - start
    if newcomer_task is not None:
        await newcomer_task
    for task in flood_tasks:  # most wait in alex's lane: stop them rather than drain the queue
        task.cancel()
    await asyncio.gather(*flood_tasks, return_exceptions=True)
    answered = [s for c in good for s in c.statuses]
    assert set(answered) == {200}, set(answered)
    # Over the verification bounds (docs/security.md) a flood is answered 503 at once instead of queueing.
    assert all(s in (401, 503) for c in bad for s in c.statuses)
    return len(answered) / elapsed, latencies


def run(quick: bool = False) -> Result:
    seconds, rounds = (1.0, 3) if quick else (3.0, 5)
    stored = hash_password("123456")
    gateway = Gateway(
        consumers=[Consumer("alex", password_hash=stored)], routes=[Route("/*", plugins=[BasicAuthPlugin()])]
    )
    # The newcomer's gateway remembers nothing, so each of its requests is a first login.
    newcomer_gateway = Gateway(
        consumers=[Consumer("bob", password_hash=hash_password("654321"))],
        routes=[Route("/*", plugins=[BasicAuthPlugin()])],
        cache_size=0,
    )
    low, normal = VerificationPool(), VerificationPool(nice=0)
    apps = {
        "low": ASGIGatewayMiddleware(bare_asgi, gateway, pool=low),
        "normal": ASGIGatewayMiddleware(bare_asgi, gateway, pool=normal),
    }
    newcomers = {
        name: Client(ASGIGatewayMiddleware(bare_asgi, newcomer_gateway, pool=pool), header("bob", "654321"))
        for name, pool in (("low", low), ("normal", normal))
    }
    samples: dict[str, list[float]] = {name: [] for name in LABELS}
    first_login: dict[str, list[float]] = {name: [] for name in LABELS}

    async def measure() -> None:
        for app in apps.values():
            await Client(app, header("alex", "123456")).one()  # warm the cache: one argon2id verification
        plan = {
            "quiet": ("low", False, False),
            "flood": ("low", True, False),
            "flood normal priority": ("normal", True, False),
            "spread flood": ("low", True, True),
            "spread flood normal priority": ("normal", True, True),
        }
        for _ in range(rounds):
            for name, (priority, flood, spread) in plan.items():
                rate, waits = await window(apps[priority], seconds, flood, newcomers[priority], spread)
                samples[name].append(rate)
                first_login[name] += waits

    asyncio.run(measure())
    low.shutdown()
    normal.shutdown()
    quiet = median(samples["quiet"])
    result = Result(
        "Good clients during a wrong-password flood",
        f"In-process ASGI on one event loop: {GOOD_TASKS} good tasks (alex, right password, cached), with "
        f"and without {FLOOD_TASKS} flood tasks (alex, wrong password: a real argon2id verification each, "
        f"library default parameters); {seconds:g} s windows, {rounds} interleaved rounds, medians. A third "
        "task logs in as bob, whose gateway caches nothing, so each of its requests is a first login.",
        header=["window", "good requests/s", "vs no flood", "bob's first login (median)"],
    )
    for name, rates in samples.items():
        rate = median(rates)
        waits = first_login.get(name, [])
        wait = f"{statistics.median(waits) * 1e3:.0f} ms ({len(waits)} logins)" if waits else "—"
        result.table.append([LABELS[name], f"{rate:,.0f}", f"{rate / quiet:.2f}×", wait])
    result.notes.append(
        "Bob's first logins wait for a verification thread that competes with the busy event loop (and, on a "
        "shared machine, other processes); behind a flood spread over many usernames they also wait for one "
        "check per busy lane — the bound described in [passwords.md](passwords.md#verification-under-load)."
    )
    result.targets.append(
        Target("good-client throughput during the flood", median(samples["flood"]) / quiet, 0.5, ">=")
    )
    return result


if __name__ == "__main__":
    outcome = run(quick="--quick" in sys.argv)
    for line in outcome.table:
        print(*line, sep="\t")
    for target in outcome.targets:
        print(target.describe())
