"""Route matching at 10, 1,000 and 10,000 routes (SPEC §4: the cost must not grow with the route count).

Each set is the first N routes of one generated sequence (half exact uris, half ``/*`` prefixes, names of
varying length, a quarter of them with hosts), so the routes looked up exist in every set: only the number
of *other* routes changes. The lookups are an exact hit, a hit below a prefix (deep path) and a miss.
"""

from __future__ import annotations

import random
import sys

from _common import Result, Target, interleaved, median, per_call, us

from consumer_auth import Gateway, RequestFacts, Route

WORDS = [
    "api", "v1", "v2", "users", "orders", "items", "catalog", "billing", "inventory", "search", "auth",
    "accounts", "payments", "shipping", "reports", "analytics", "notifications", "settings", "admin", "files",
]  # fmt: skip
SIZES = (10, 1_000, 10_000)


def generate(count: int) -> list[Route]:
    rng = random.Random(20240601)  # noqa: S311 - a fixed, reproducible route set
    routes = []
    for index in range(count):
        depth = rng.randint(1, 4)
        segments = [
            rng.choice(WORDS) + (str(rng.randint(0, 999)) if rng.random() < 0.5 else "") for _ in range(depth)
        ]
        path = "/" + "/".join(segments) + f"-{index}"
        hosts = [f"h{index % 7}.example.com"] if index % 4 == 3 else None
        uri = path + "/*" if index % 2 else path
        routes.append(Route(uri, hosts=hosts, methods=["GET", "POST"] if index % 3 == 0 else None))
    return routes


def lookups(routes: list[Route]) -> list[RequestFacts]:
    exact = next(r.uri for r in routes if r.uri and not r.uri.endswith("*") and r.hosts is None)
    prefix = next(r.uri for r in routes if r.uri and r.uri.endswith("*") and r.hosts is None)
    assert exact is not None
    assert prefix is not None
    return [
        RequestFacts("GET", exact, "example.com"),
        RequestFacts("GET", prefix[:-1] + "deep/er/path/to/a/resource", "example.com"),
        RequestFacts("GET", "/no/such/route/anywhere", "example.com"),
    ]


def run(quick: bool = False) -> Result:
    base = generate(SIZES[-1])
    gateways = {size: Gateway(routes=base[:size]) for size in SIZES}
    requests = lookups(base[: SIZES[0]])
    for size, gateway in gateways.items():  # every lookup answers the same in every set
        answers = [None if (m := gateway.match(f)) is None else m.route.uri for f in requests]
        assert answers[0] is not None, (size, answers)
        assert answers[1] is not None, (size, answers)
        assert answers[2] is None, (size, answers)

    def measure(gateway: Gateway) -> float:
        match = gateway.match
        return per_call(lambda: [match(f) for f in requests], 2_000 if quick else 20_000) / len(requests)

    samples = interleaved(
        {str(size): (lambda g=g: measure(g)) for size, g in gateways.items()}, 5 if quick else 15
    )
    medians = {size: median(samples[str(size)]) for size in SIZES}
    result = Result(
        "Route matching",
        "`Gateway.match` per lookup (an exact hit, a hit below a `/*` prefix, a miss), median of interleaved rounds.",
        header=["routes", "per lookup", "vs 10 routes"],
    )
    for size in SIZES:
        result.table.append([f"{size:,}", us(medians[size]), f"{medians[size] / medians[10]:.2f}×"])
    result.targets.append(Target("matching at 10,000 routes vs 10", medians[10_000] / medians[10], 1.5, "<="))
    return result


if __name__ == "__main__":
    outcome = run(quick="--quick" in sys.argv)
    for row in outcome.table:
        print(*row, sep="\t")
    for target in outcome.targets:
        print(target.describe())
