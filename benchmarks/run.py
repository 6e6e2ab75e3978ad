"""Run every benchmark and write ``docs/benchmarks.md`` (``make bench``).

Usage: ``python benchmarks/run.py [--quick] [--only NAME[,NAME...]] [--output PATH]``

Names: ``inprocess``, ``metrics``, ``routes``, ``flood``, ``proxy``, ``store``. ``--quick`` shortens every measurement (for trying the
scripts, not for numbers worth keeping).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable
from pathlib import Path

import flood
import inprocess
import metrics
import proxy
import routes
import security
import store
from _common import Result, machine, tool_version

BENCHMARKS: dict[str, Callable[[bool], Result]] = {
    "inprocess": inprocess.run,
    "metrics": metrics.run,
    "routes": routes.run,
    "flood": flood.run,
    "proxy": proxy.run,
    "store": store.run,
    "security": security.run,
}


def markdown(results: list[Result], command: str, started: str, took: float) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`benchmarks/run.py`); every ratio compares two things measured in the same run,",
        "interleaved, so a busy machine slows both sides alike. Rerun on a quiet machine for numbers worth quoting.",
        "",
        f"- Command: `{command}`",
        f"- Run: {started} UTC, {took / 60:.1f} minutes",
        f"- Machine: {machine()}",
        f"- Tools: {tool_version(['nginx', '-v'])}; {tool_version(['wrk', '-v'])}; "
        f"Caddy {tool_version(['caddy', 'version'])}; {tool_version(['haproxy', '-v'])}",
        "",
        "## Targets",
        "",
    ]
    for result in results:
        lines += [f"- {target.describe()}" for target in result.targets]
        lines += [f"- {result.title}: {note}" for note in result.notes if note.startswith("Not run")]
    for result in results:
        lines += ["", f"## {result.title}", "", result.method, ""]
        if result.table:
            lines.append("| " + " | ".join(result.header) + " |")
            lines.append("|" + "---|" * len(result.header))
            lines += ["| " + " | ".join(row) + " |" for row in result.table]
            lines.append("")
        lines += [f"{note}" for note in result.notes]
    lines += [
        "",
        "## How to read these numbers",
        "",
        "- *Overhead* is the time a protected request takes minus the same request to the unprotected app,",
        "  per round, then the median over rounds; the ratios compare overheads, not whole requests.",
        "- The scripts are in `benchmarks/` and use only plain Python timers, `wrk` and Debian's nginx, Caddy",
        "  and HAProxy.",
        "- The verification cache and the bounded verification pool these numbers depend on are described in",
        "  [passwords.md](passwords.md).",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(BENCHMARKS))
    parser.add_argument(
        "--output", default=str(Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md")
    )
    options = parser.parse_args()
    chosen = [name.strip() for name in options.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
    begin = time.monotonic()
    results = []
    for name in chosen:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        result = BENCHMARKS[name](options.quick)
        for target in result.targets:
            print(f"  {target.describe()}", file=sys.stderr)
        for note in result.notes:
            print(f"  {note}", file=sys.stderr)
        results.append(result)
    command = "make bench" + (f" BENCH_ARGS='{' '.join(sys.argv[1:])}'" if sys.argv[1:] else "")
    Path(options.output).write_text(
        markdown(results, command, started, time.monotonic() - begin), encoding="utf-8"
    )
    print(f"wrote {options.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
