"""Before/after: one benchmark script run under two source trees, alternately, round by round.

    cd benchmarks && ../.venv/bin/python ab.py --base /tmp/base/src --rounds 6 inprocess --quick

Each round runs ``<script>.py`` once with ``PYTHONPATH`` at the base tree (``--base``, a ``src``
directory, e.g. from ``git archive main src``) and once at this checkout's ``src``, the order swapped
every round, so a machine that gets busier or quieter moves both alike. The script's tab-separated rows
(``interface  what  12.3 µs  ...``) are collected; for every row and every µs column, the median under
each tree and their ratio (after ÷ before) are printed.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

_MICROSECONDS = re.compile(r"^(-?[0-9.,]+) µs$")
HERE = Path(__file__).resolve().parent


def run_once(src: str, script: str, args: list[str]) -> dict[tuple[str, ...], list[float]]:
    """The µs columns of each row the script prints, keyed by its leading text columns."""
    env = {**os.environ, "PYTHONPATH": src}
    done = subprocess.run(
        [sys.executable, f"{script}.py", *args],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rows: dict[tuple[str, ...], list[float]] = {}
    for line in done.stdout.splitlines():
        fields = line.split("\t")
        values = [m.group(1) for f in fields if (m := _MICROSECONDS.match(f.strip()))]
        if not values:
            continue
        key = tuple(f for f in fields if not _MICROSECONDS.match(f.strip()) and f and f != "—")[:2]
        rows[key] = [float(v.replace(",", "")) for v in values]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the 'before' tree's src directory")
    parser.add_argument("--after", default=str(HERE.parent / "src"), help="the 'after' src (default: ours)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("script", help="a benchmark script of this directory, without .py")
    options, extra = parser.parse_known_args()
    options.args = extra  # the script's own options (--quick)
    after = options.after
    samples: dict[str, dict[tuple[str, ...], list[list[float]]]] = {"before": {}, "after": {}}
    for index in range(options.rounds):
        order = [("before", options.base), ("after", after)]
        for name, src in order if index % 2 == 0 else reversed(order):
            for key, values in run_once(src, options.script, options.args).items():
                samples[name].setdefault(key, []).append(values)
    print("row\tcolumn\tbefore (median)\tafter (median)\tafter ÷ before")
    for key, rounds in samples["after"].items():
        before_rounds = samples["before"].get(key)
        if not before_rounds:
            continue
        for column in range(len(rounds[0])):
            b = statistics.median(r[column] for r in before_rounds)
            a = statistics.median(r[column] for r in rounds)
            print(f"{' / '.join(key)}\t{column}\t{b:.2f} µs\t{a:.2f} µs\t{a / b:.3f}×")


if __name__ == "__main__":
    main()
