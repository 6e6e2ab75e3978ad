"""The per-request work an allowed request costs in the adapters and the proxy rules, against another
source tree of the library (a baseline, such as the commit before a change).

Usage: ``python benchmarks/hot_path.py --baseline DIR [--instructions]`` where ``DIR`` holds the baseline's
``src`` (``git archive main src | tar -x -C /tmp/base``). Each round runs one child process per tree,
alternating (baseline, this tree, baseline, ...), each timing the same operations in CPU time; the medians of
the rounds are printed with their ratio. With ``--instructions`` each tree instead runs under valgrind's
callgrind, and the instructions of ``count`` calls minus those of half as many give the exact cost per call,
whatever else the machine is doing. Nothing here uses sockets: it measures the code, not the network.

Operations, on a request with a dozen ordinary headers and valid clear-text credentials:

- ``asgi``: ``facts_from_scope`` + ``Gateway.decide`` + ``apply_allow_scope`` (the ASGI middleware's work);
- ``wsgi``: ``facts_from_environ`` + ``Gateway.decide`` + ``apply_allow`` on a copy of the environ;
- ``plan``: ``upstream_request`` (what both proxies do with the headers of an allowed request).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

AUTHORIZATION = b"Basic " + base64.b64encode(b"alex:123456")
HEADERS = [
    (b"host", b"example.com"),
    (b"user-agent", b"curl/8.5.0"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate, br"),
    (b"accept-language", b"en-US,en;q=0.9"),
    (b"authorization", AUTHORIZATION),
    (b"cookie", b"session=abc; theme=dark"),
    (b"x-request-id", b"5b1c0c8e-7d1e-4b3a-9f2c-1a2b3c4d5e6f"),
    (b"referer", b"https://example.com/app"),
    (b"cache-control", b"no-cache"),
    (b"content-type", b"application/json"),
    (b"content-length", b"0"),
]


def operations() -> dict[str, Callable[[], object]]:
    """The operations, built in the tree on ``sys.path``."""
    from consumer_auth import BasicAuthPlugin, Consumer, Gateway, Route
    from consumer_auth.asgi import apply_allow_scope, facts_from_scope
    from consumer_auth.proxy import ClientRequest, upstream_request
    from consumer_auth.wsgi import apply_allow, facts_from_environ

    gateway = Gateway(
        consumers=[Consumer("alex", password="123456")], routes=[Route("/*", plugins=[BasicAuthPlugin()])]
    )
    scope: Any = {
        "type": "http",
        "method": "GET",
        "path": "/v1/json",
        "raw_path": b"/v1/json",
        "query_string": b"",
        "headers": HEADERS,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 9080),
    }
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/v1/json",
        "REMOTE_ADDR": "127.0.0.1",
        **{
            "HTTP_" + name.decode().upper().replace("-", "_"): value.decode()
            for name, value in HEADERS
            if name not in (b"content-type", b"content-length")
        },
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": "0",
    }
    client = ClientRequest(headers=HEADERS, peer="127.0.0.1", server_port=9080, raw_path=b"/v1/json")
    facts = facts_from_scope(scope)
    allow = gateway.decide(facts)

    def asgi() -> None:
        f = facts_from_scope(scope)
        apply_allow_scope(scope, f, gateway.decide(f))  # type: ignore[arg-type]

    def wsgi() -> None:
        e = dict(environ)
        f = facts_from_environ(e)
        apply_allow(e, f, gateway.decide(f))  # type: ignore[arg-type]

    def plan() -> None:
        upstream_request(facts, allow, client)  # type: ignore[arg-type]

    return {"asgi": asgi, "wsgi": wsgi, "plan": plan}


def child(count: int, only: str | None) -> dict[str, float]:
    """Run in the tree on ``sys.path``: CPU microseconds per call (or just ``count`` calls of ``only``)."""
    found: dict[str, float] = {}
    for name, operation in operations().items():
        if only is not None:
            if name == only:
                for _ in range(count):
                    operation()
            continue
        for _ in range(count // 10):  # warm up
            operation()
        start = time.thread_time()
        for _ in range(count):
            operation()
        found[name] = (time.thread_time() - start) / count * 1e6
    return found


def _instructions(src: Path, operation: str, count: int, baseline: str) -> int:
    """Instructions executed by a child making ``count`` calls (valgrind's callgrind counts them)."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        "--baseline",
        baseline,
        "--count",
        str(count),
        "--only",
        operation,
    ]
    env = {**os.environ, "PYTHONPATH": str(src)}
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stderr
    return int(re.search(r"Collected : (\d+)", output).group(1))  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", required=True, help="a source tree of the baseline (holding src/)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions under valgrind instead of timing (exact, whatever the machine's load)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.count, args.only)))
        return
    trees = {
        "baseline": Path(args.baseline) / "src",
        "this tree": Path(__file__).resolve().parents[1] / "src",
    }
    if args.instructions:
        print(f"instructions per call (callgrind: {args.count:,} calls minus {args.count // 2:,}, per call)")
        print("| operation | baseline | this tree | ratio |")
        print("|---|---|---|---|")
        for operation in ("asgi", "wsgi", "plan"):
            per_call = {}
            for name, src in trees.items():
                full = _instructions(src, operation, args.count, args.baseline)
                half = _instructions(src, operation, args.count // 2, args.baseline)
                per_call[name] = (full - half) / (args.count - args.count // 2)
            base, this = per_call["baseline"], per_call["this tree"]
            print(f"| {operation} | {base:,.0f} | {this:,.0f} | {this / base:.3f}× |")
        return
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, src in trees.items():
            env = {**os.environ, "PYTHONPATH": str(src)}
            command = [
                sys.executable,
                __file__,
                "--child",
                "--baseline",
                args.baseline,
                "--count",
                str(args.count),
            ]
            output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
            samples[name].append(json.loads(output))
    print(
        f"{args.rounds} interleaved rounds, {args.count:,} calls per operation per round (median CPU µs per call)"
    )
    print("| operation | baseline | this tree | ratio |")
    print("|---|---|---|---|")
    for operation in ("asgi", "wsgi", "plan"):
        base = statistics.median(s[operation] for s in samples["baseline"])
        this = statistics.median(s[operation] for s in samples["this tree"])
        print(f"| {operation} | {base:.2f} | {this:.2f} | {this / base:.2f}× |")


if __name__ == "__main__":
    main()
