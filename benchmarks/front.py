"""Server fronts: the project's own asyncio front on httptools vs uvicorn and granian, and ``serve`` before
and after a change.

Two comparisons, each measured interleaved round by round with ``wrk -t1 -c32`` (one worker process per
server, keep-alive connections):

- bare fronts serving a trivial ASGI app that answers ``ok``: the project's front
  (``consumer_auth._runner``, uvloop), uvicorn (``--http httptools --loop uvloop``) and granian
  (``--interface asgi --loop uvloop``), when each is installed (granian is not a dependency:
  ``pip install granian`` to include it);
- ``consumer-auth serve`` with a clear-text credential in front of a one-worker nginx answering ``ok``:
  this tree against the tree of a git ref (``--before REF``, default ``main``), extracted with
  ``git archive`` and run by the same interpreter (its own dependencies must be installed).

Run: ``.venv/bin/python benchmarks/front.py [--before REF] [--seconds 5] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import interleaved, machine, median
from proxy import AUTHORIZATION, NGINX, PASSWORD, UPSTREAM_BODY, ensure_tools, free_port, stop, wait_for

ROOT = Path(__file__).resolve().parent.parent
OK_APP = Path(__file__).resolve().parent / "_ok_app.py"


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) used so far by a process and every process under it (Linux ``/proc``)."""
    total = 0.0
    pending = [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def measure(port: int, pid: int, seconds: int, authorization: str | None = None) -> tuple[float, float]:
    """Requests per second, and the server's CPU microseconds per request (its own processes' time,
    which other work on the machine does not inflate the way it slows throughput)."""
    before = cpu_seconds(pid)
    rate, count = wrk(port, seconds, authorization)
    return rate, (cpu_seconds(pid) - before) / count * 1e6


def wrk(port: int, seconds: int, authorization: str | None = None) -> tuple[float, int]:
    """Requests per second and requests over ``seconds`` with one thread and 32 connections; all must be
    200."""
    command = ["wrk", "-t1", "-c32", f"-d{seconds}s", f"http://127.0.0.1:{port}/"]
    if authorization is not None:
        command[1:1] = ["-H", f"Authorization: {authorization}"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    if "Non-2xx or 3xx responses" in done.stdout or "Socket errors" in done.stdout:
        raise RuntimeError(f"wrk saw failed requests on port {port}:\n{done.stdout}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    count = re.search(r"(\d+) requests in", done.stdout)
    if found is None or count is None:
        raise RuntimeError(f"unexpected wrk output:\n{done.stdout}")
    return float(found.group(1)), int(count.group(1))


def start(
    command: list[str], port: int, what: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})}
    )
    wait_for(port, process, what)
    return process


def bare_fronts(ports: dict[str, int], app: str = "_ok_app:app") -> dict[str, list[str]]:
    """The command line of each installed front in ``ports`` serving ``app`` (the ``ok`` app) there."""
    python = sys.executable
    bench = str(OK_APP.parent)
    commands = {}
    if "own" in ports:
        commands["own front (httptools, uvloop)"] = [python, str(OK_APP), str(ports["own"])]
    if importlib.util.find_spec("uvicorn") is not None:
        commands["uvicorn (httptools, uvloop)"] = [
            python, "-m", "uvicorn", app, "--app-dir", bench, "--port", str(ports["uvicorn"]),
            "--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    granian = Path(python).with_name("granian")
    if granian.exists():
        commands["granian (ASGI, uvloop)"] = [
            str(granian), "--interface", "asgi", "--loop", "uvloop", "--workers", "1",
            "--port", str(ports["granian"]), "--log-level", "warning", "--no-ws", app,
        ]  # fmt: skip
    return commands


def serve_command(config: Path, port: int) -> list[str]:
    return [
        sys.executable, "-c", "import sys; from consumer_auth.cli import main; sys.exit(main())",
        "serve", "--config", str(config), "--port", str(port), "--workers", "1", "--no-access-log",
    ]  # fmt: skip


def report(samples: dict[str, list[Any]], baseline: str) -> None:
    """Each variant's rounds and medians, and its ratios to the first variant: the median of the ratios
    round by round (the rounds were measured side by side, so a change in the machine's load moves both)."""
    first = next(iter(samples.values()))
    for name, values in samples.items():
        rates = [rate for rate, _ in values]
        costs = [cost for _, cost in values]
        rounds = " · ".join(f"{rate:,.0f}" for rate in rates)
        speed = median([rate / base[0] for rate, base in zip(rates, first, strict=True)])
        cost = median([cost / base[1] for cost, base in zip(costs, first, strict=True)])
        print(f"  {name}: {rounds} req/s (median {median(rates):,.0f}; {speed:.2f}× {baseline})")
        print(f"      CPU per request: {median(costs):.1f} µs ({cost:.2f}× {baseline})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main", help="git ref of the 'before' serve (default main)")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    why_not = ensure_tools()
    if why_not is not None:
        sys.exit(f"not run: {why_not}")
    print(machine())
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="consumer-auth-front-") as temp:
        directory = Path(temp)
        try:
            # -- bare fronts ----------------------------------------------------------------------
            ports = {name: free_port() for name in ("own", "uvicorn", "granian")}
            commands = bare_fronts(ports)
            targets = {}
            for name, command in commands.items():
                port = ports[name.split()[0]]
                processes.append(start(command, port, name, {"PYTHONPATH": str(OK_APP.parent)}))
                targets[name] = (port, processes[-1].pid)
            for port, _ in targets.values():
                wrk(port, 1)  # warm up
            samples = interleaved(
                {name: (lambda t=target: measure(*t, args.seconds)) for name, target in targets.items()},  # type: ignore[misc]
                args.rounds,
            )
            print(
                f"\nbare fronts, 'ok' app: wrk -t1 -c32 -d{args.seconds}s, {args.rounds} interleaved rounds"
            )
            report(samples, "own")
            stop(processes)
            processes.clear()

            # -- serve before and after -------------------------------------------------------------
            before_tree = directory / "before"
            before_tree.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.before, "src"], capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(before_tree)], input=archive, check=True)
            upstream = free_port()
            nginx_config = directory / "upstream.conf"
            nginx_config.write_text(
                NGINX.format(
                    dir=directory, name="upstream", port=upstream, upstream=upstream, body=UPSTREAM_BODY
                )
            )
            processes.append(
                subprocess.Popen(
                    ["nginx", "-p", str(directory), "-c", str(nginx_config)], stderr=subprocess.DEVNULL
                )
            )
            wait_for(upstream, processes[-1], "nginx upstream")
            config = directory / "gateway.json"
            document = {
                "consumers": [{"username": "alex", "plugins": {"basic-auth": {"username": "alex", "password": PASSWORD}}}],
                "services": [{"id": "bench", "upstream": f"http://127.0.0.1:{upstream}"}],
                "routes": [{"uri": "/*", "service_id": "bench", "plugins": {"basic-auth": {}}}],
            }  # fmt: skip
            config.write_text(json.dumps(document))
            serves = {}
            for name, tree in (
                (f"serve, before ({args.before})", before_tree / "src"),
                ("serve, after", ROOT / "src"),
            ):
                port = free_port()
                processes.append(start(serve_command(config, port), port, name, {"PYTHONPATH": str(tree)}))
                serves[name] = (port, processes[-1].pid)
            # The same proxy app on other servers (without serve's limits): what another front would give.
            others = {name: free_port() for name in ("uvicorn", "granian")}
            for name, command in bare_fronts(others, "_proxy_app:app").items():
                port = others[name.split()[0]]
                env = {"PYTHONPATH": str(OK_APP.parent), "CONSUMER_AUTH_BENCH_CONFIG": str(config)}
                processes.append(start(command, port, name, env))
                serves[f"the proxy app on {name}"] = (port, processes[-1].pid)
            for port, _ in serves.values():
                wrk(port, 1, AUTHORIZATION)
            samples = interleaved(
                {
                    name: (lambda t=target: measure(*t, args.seconds, AUTHORIZATION))  # type: ignore[misc]
                    for name, target in serves.items()
                },
                args.rounds,
            )
            print(
                f"\nconsumer-auth serve, clear-text credential, nginx upstream: wrk -t1 -c32 -d{args.seconds}s"
            )
            report(samples, "before")
        finally:
            stop(processes)


if __name__ == "__main__":
    main()
