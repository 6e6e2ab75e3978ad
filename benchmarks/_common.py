"""Shared helpers of the benchmarks: interleaved timing, medians, and a description of the machine.

Every comparison is measured A/B interleaved in the same run (variant A, variant B, A, B, ...) and reported
as the median of the rounds, so a machine that gets busier or quieter during the run moves both sides alike.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass
class Result:
    """One benchmark's findings: rows for the tables, and the targets it checks."""

    title: str
    method: str
    table: list[list[str]] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Target:
    """A target ratio: ``value`` compared to ``limit`` (``<=`` or ``>=``)."""

    name: str
    value: float
    limit: float
    direction: str  # "<=" or ">="

    @property
    def met(self) -> bool:
        return self.value <= self.limit if self.direction == "<=" else self.value >= self.limit

    def describe(self) -> str:
        verdict = "met" if self.met else "NOT met"
        return f"{self.name}: {self.value:.2f}× (target {self.direction} {self.limit:g}×) — {verdict}"


def interleaved(variants: Mapping[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each variant once per round, in turn, ``rounds`` times; return every measurement per variant."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(rounds):
        order = list(variants.items())
        if round_ % 2:
            order.reverse()  # neither side always goes first
        for name, measure in order:
            samples[name].append(measure())
    return samples


def per_call(function: Callable[[], object], calls: int) -> float:
    """Seconds per call of ``function`` over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls


def median(values: list[float]) -> float:
    return statistics.median(values)


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.2f} µs"


def machine() -> str:
    """A one-paragraph description of the machine the numbers come from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (
        f"{cpu}, {os.cpu_count()} CPUs; {platform.system()} {platform.release()}; "
        f"Python {sys.version.split()[0]} ({platform.python_implementation()}); load average at start {load}"
    )


def tool_version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else "unknown"


REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_unavailable() -> str | None:
    """Why a Redis row cannot run (``None``: the Redis on 127.0.0.1:6379 answers)."""
    try:
        import redis
    except ImportError:
        return "the `redis` package is not installed (it comes with `pip install -e '.[bench]'`)"
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as error:
        return f"no Redis answered on 127.0.0.1:6379 ({type(error).__name__})"
    return None
